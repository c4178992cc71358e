using InferKit.Backends;

namespace InferKit.Models;

/// <summary>The lifecycle state of one model version.</summary>
public enum ModelState
{
    /// <summary>Registered; not loaded yet (it loads at host start, or on first use without a host).</summary>
    NotLoaded = 0,
    /// <summary>Loading or warming up.</summary>
    Loading,
    /// <summary>Loaded, warmed and serving.</summary>
    Ready,
    /// <summary>Loading failed; see <see cref="ModelInfo.Error"/>.</summary>
    Failed,
    /// <summary>Finishing accepted work; taking no new requests.</summary>
    Draining,
    /// <summary>Unloaded; its instances are disposed.</summary>
    Unloaded,
}

/// <summary>The registered models: their state, signatures and instances; loading and draining.</summary>
public interface IModelRegistry
{
    /// <summary>The names of every registered model (real and virtual), in registration order.</summary>
    IReadOnlyList<string> ModelNames { get; }

    /// <summary>Describes a model (its current version, or the given one).</summary>
    /// <exception cref="ModelNotFoundException">No such model or version.</exception>
    ModelInfo GetModel(string name, string? version = null);

    /// <summary>True when every model marked required is loaded and warmed.</summary>
    bool AllRequiredModelsReady { get; }

    /// <summary>Loads (and warms) one model if it is not loaded yet; completes when it is ready.</summary>
    /// <exception cref="ModelNotFoundException">No such model.</exception>
    /// <exception cref="ModelLoadException">The model failed to load.</exception>
    Task LoadAsync(string name, CancellationToken cancellationToken = default);

    /// <summary>Loads every registered model in parallel. Models that fail are logged and reported as <see cref="ModelState.Failed"/>; required ones make this throw.</summary>
    Task LoadAllAsync(CancellationToken cancellationToken = default);

    /// <summary>Stops admitting requests (they are refused with <see cref="RefusalReason.ShuttingDown"/>) and waits until every accepted request is answered, or the timeout passes.</summary>
    /// <returns>True when everything accepted was answered in time.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than <see cref="Timeout.InfiniteTimeSpan"/>) or longer than a timer waits (about 49.7 days); nothing changed.</exception>
    Task<bool> DrainAsync(TimeSpan timeout, CancellationToken cancellationToken = default);
}

/// <summary>A snapshot of one model version.</summary>
public sealed class ModelInfo
{
    internal ModelInfo(string name, string version, IReadOnlyList<string> versions, ModelState state, ModelSignature? signature,
        IReadOnlyList<ModelInstanceInfo> instances, string? error, bool required, string platform, string kind, int queueLength = 0, int activeRequests = 0)
    {
        QueueLength = queueLength;
        ActiveRequests = activeRequests;
        Name = name;
        Version = version;
        Versions = versions;
        State = state;
        Signature = signature;
        Instances = instances;
        Error = error;
        Required = required;
        Platform = platform;
        Kind = kind;
    }

    /// <summary>The model name.</summary>
    public string Name { get; }

    /// <summary>The version described.</summary>
    public string Version { get; }

    /// <summary>Every known version.</summary>
    public IReadOnlyList<string> Versions { get; }

    /// <summary>The lifecycle state.</summary>
    /// <remarks>
    /// A virtual model (cascade, adaptive) is <see cref="ModelState.Ready"/> only when every member is, as it then serves
    /// as configured; otherwise it reports the state of the member furthest from serving (Failed, then Unloaded,
    /// Draining, NotLoaded, Loading) and <see cref="Error"/> names the members that are not ready. It may still answer
    /// requests meanwhile (a cascade with an earlier stage's answer, an adaptive model with another variant): a response's
    /// <see cref="InferenceResponse.AnsweredBy"/>, <see cref="InferenceResponse.RowStages"/> and <see cref="InferenceResponse.Note"/> say what answered.
    /// </remarks>
    public ModelState State { get; }

    /// <summary>True when the model is loaded, warmed and serving.</summary>
    public bool IsReady => State == ModelState.Ready;

    /// <summary>The signature, once loaded (a virtual model reports its first loaded member's).</summary>
    public ModelSignature? Signature { get; }

    /// <summary>The instances and their load.</summary>
    public IReadOnlyList<ModelInstanceInfo> Instances { get; }

    /// <summary>
    /// Why loading failed, when <see cref="State"/> is <see cref="ModelState.Failed"/>. For a virtual model, which members
    /// keep it from being ready and why (for example "stage 2 ('large') failed to load: ..."), whenever it is not ready.
    /// </summary>
    public string? Error { get; }

    /// <summary>Whether readiness waits for this model.</summary>
    public bool Required { get; }

    /// <summary>The serving platform ("onnxruntime", or a custom backend's name).</summary>
    public string Platform { get; }

    /// <summary>"model" for a real model; "cascade" or "adaptive" for virtual ones.</summary>
    public string Kind { get; }

    /// <summary>Requests waiting in the queue now.</summary>
    public int QueueLength { get; }

    /// <summary>Requests admitted and not yet answered (queued or running) now.</summary>
    public int ActiveRequests { get; }
}

/// <summary>A snapshot of one model instance: where it runs and how loaded it is.</summary>
/// <param name="Id">The instance id, for example "fraud/1/0".</param>
/// <param name="Provider">The execution provider serving it.</param>
/// <param name="Weight">Its load-balancing weight.</param>
/// <param name="MaxConcurrency">How many batches it may run at once.</param>
/// <param name="Outstanding">Batches running on it now.</param>
/// <param name="OutstandingRows">Rows (requests' batch rows) running on it now.</param>
/// <param name="SmoothedLatency">The smoothed batch latency (peak-sensitive EWMA).</param>
/// <param name="ConsecutiveFailures">Failures since the last good run.</param>
/// <param name="TotalFailures">Failures since load.</param>
/// <param name="OutUntil">When it returns to rotation, if it is taken out.</param>
/// <param name="Completed">Batches completed.</param>
public sealed record ModelInstanceInfo(
    string Id,
    ExecutionProviderInfo Provider,
    double Weight,
    int MaxConcurrency,
    int Outstanding,
    int OutstandingRows,
    TimeSpan SmoothedLatency,
    int ConsecutiveFailures,
    long TotalFailures,
    DateTimeOffset? OutUntil,
    long Completed);
