using System.ComponentModel.DataAnnotations;
using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.LoadBalancing;
using InferKit.Scheduling;

namespace InferKit.Models;

/// <summary>Settings of one model, configured as named options (the name is the model name).</summary>
public sealed class ModelOptions
{
    /// <summary>Where the ONNX model comes from (set by AddOnnxModel).</summary>
    public ModelSource? Source { get; set; }

    /// <summary>The version label of this model.</summary>
    [Required]
    [RegularExpression(@"^(?!\.\.?$)[A-Za-z0-9._-]{1,64}$", ErrorMessage = "Version must be 1-64 letters, digits, '.', '_' or '-', and not '.' or '..' (a URL path normalises those away).")]
    public string Version { get; set; } = "1";

    /// <summary>How many instances to run (when <see cref="InstanceGroups"/> is empty).</summary>
    [Range(1, 256)]
    public int Instances { get; set; } = 1;

    /// <summary>
    /// How many batches one instance may run at once (when <see cref="InstanceGroups"/> is empty). An ONNX CPU instance
    /// runs at least <see cref="OnnxSessionSettings.Lanes"/> at once.
    /// </summary>
    [Range(1, 256)]
    public int MaxConcurrencyPerInstance { get; set; } = 1;

    /// <summary>ONNX Runtime settings for the instances (when <see cref="InstanceGroups"/> is empty).</summary>
    public OnnxSessionSettings Onnx { get; } = new();

    /// <summary>
    /// Groups of instances with their own device, provider, threads, weight and in-flight limit (for example one
    /// CUDA instance and two CPU instances). When empty, <see cref="Instances"/> instances use <see cref="Onnx"/>.
    /// </summary>
    public IList<InstanceGroupOptions> InstanceGroups { get; } = new List<InstanceGroupOptions>();

    /// <summary>Queueing and batching.</summary>
    public BatchingOptions Batching { get; } = new();

    /// <summary>The load-balancing strategy, by name (see <see cref="LoadBalancingStrategies"/>); case-insensitive.</summary>
    [Required]
    public string LoadBalancing { get; set; } = LoadBalancingStrategies.LeastConnections;

    /// <summary>Passive health: when an instance is taken out of rotation and for how long.</summary>
    public InstanceHealthOptions Health { get; } = new();

    /// <summary>Warm-up runs per instance, on zero-filled inputs, before the instance counts as ready.</summary>
    [Range(0, 100)]
    public int WarmupRuns { get; set; } = 1;

    /// <summary>Whether readiness waits for this model.</summary>
    public bool Required { get; set; } = true;

    /// <summary>
    /// Force batching off for a model whose dynamic first axis is not a batch axis. Left unset, InferKit also notices it
    /// at run time, from the first joined batch whose outputs do not follow the batch's rows: that batch's requests run
    /// again one by one, the model version runs one request per run from then on, and one warning (event 2005) says so.
    /// </summary>
    public bool? AxisZeroIsBatch { get; set; }

    /// <summary>A custom backend factory (set by AddModel); null for ONNX models.</summary>
    internal Func<ModelInstanceContext, IModelBackend>? BackendFactory { get; set; }
}

/// <summary>A group of identical instances of one model on one device.</summary>
public sealed class InstanceGroupOptions
{
    /// <summary>How many instances the group runs.</summary>
    [Range(1, 256)]
    public int Count { get; set; } = 1;

    /// <summary>ONNX Runtime settings (provider, device, threads) for this group.</summary>
    public OnnxSessionSettings Onnx { get; } = new();

    /// <summary>Relative capacity for weighted strategies; null learns it from measured throughput. Set it on every group or on none.</summary>
    [Range(0.001, 1_000_000)]
    public double? Weight { get; set; }

    /// <summary>How many batches one instance of the group may run at once (at least its <see cref="OnnxSessionSettings.Lanes"/> on CPU).</summary>
    [Range(1, 256)]
    public int MaxConcurrency { get; set; } = 1;

    /// <summary>A label for metrics and logs (for example "gpu0"); defaults to the provider name.</summary>
    public string? Name { get; set; }
}

/// <summary>Passive health checking of instances from the outcome of their runs.</summary>
public sealed class InstanceHealthOptions
{
    /// <summary>Consecutive failed runs after which an instance is taken out of rotation.</summary>
    [Range(1, 1000)]
    public int FailureThreshold { get; set; } = 3;

    /// <summary>How long an instance stays out the first time; doubles on each further failure, up to <see cref="MaxBackOff"/>.</summary>
    public TimeSpan BackOff { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The longest back-off.</summary>
    public TimeSpan MaxBackOff { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// A run longer than this counts as a failure (the result is still delivered if in time); null for none. When set, a
    /// watchdog (every RunTimeout / 2) takes an instance out of rotation at once, with the usual back-off and whatever
    /// FailureThreshold says, when one of its runs is still running after twice this (hung), without waiting for the run to
    /// return (the run itself is not stopped; when it returns it is answered and counted once as a failure).
    /// </summary>
    public TimeSpan? RunTimeout { get; set; }

    /// <summary>Retry a failed batch once on another instance (inference is idempotent).</summary>
    public bool RetryOnAnotherInstance { get; set; } = true;
}

/// <summary>Everything needed to create one instance of a custom backend.</summary>
/// <param name="ModelName">The model.</param>
/// <param name="Version">Its version.</param>
/// <param name="InstanceIndex">The instance's index across all groups.</param>
/// <param name="Group">The instance's group, or null when the model has no groups.</param>
/// <param name="Services">The service provider.</param>
public sealed record ModelInstanceContext(string ModelName, string Version, int InstanceIndex, InstanceGroupOptions? Group, IServiceProvider Services);

/// <summary>Where an ONNX model's bytes come from.</summary>
public sealed class ModelSource
{
    private readonly Func<CancellationToken, ValueTask<byte[]>>? _load;

    private ModelSource(string description, string? path, Func<CancellationToken, ValueTask<byte[]>>? load)
    {
        Description = description;
        Path = path;
        _load = load;
    }

    /// <summary>A short description for logs and errors.</summary>
    public string Description { get; }

    internal string? Path { get; }

    /// <summary>A model file on disk (ONNX Runtime reads it directly; external data files beside it work).</summary>
    public static ModelSource FromFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return new ModelSource($"file '{path}'", path, null);
    }

    /// <summary>A model held in memory.</summary>
    public static ModelSource FromBytes(byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return new ModelSource($"{bytes.Length} bytes in memory", null, _ => ValueTask.FromResult(bytes));
    }

    /// <summary>A model read from a stream that <paramref name="open"/> returns (read once per load; the stream is disposed).</summary>
    public static ModelSource FromStream(Func<Stream> open, string? description = null)
    {
        ArgumentNullException.ThrowIfNull(open);
        return new ModelSource(description ?? "stream", null, async ct =>
        {
            var stream = open() ?? throw new InvalidOperationException("The model stream factory returned null.");
            await using (stream.ConfigureAwait(false))
            {
                using var ms = stream.CanSeek ? new MemoryStream(checked((int)stream.Length)) : new MemoryStream();
                await stream.CopyToAsync(ms, ct).ConfigureAwait(false);
                return ms.Length == ms.Capacity ? ms.GetBuffer() : ms.ToArray();
            }
        });
    }

    /// <summary>A model embedded as a manifest resource of an assembly.</summary>
    public static ModelSource FromEmbeddedResource(System.Reflection.Assembly assembly, string resourceName)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        ArgumentException.ThrowIfNullOrEmpty(resourceName);
        return FromStream(
            () => assembly.GetManifestResourceStream(resourceName)
                ?? throw new FileNotFoundException($"Assembly '{assembly.GetName().Name}' has no resource '{resourceName}'."),
            $"resource '{resourceName}'");
    }

    internal async ValueTask<OnnxModelData> LoadAsync(CancellationToken cancellationToken)
    {
        if (Path is not null)
        {
            if (!File.Exists(Path))
            {
                throw new FileNotFoundException($"Model file '{Path}' does not exist.", Path);
            }

            return new OnnxModelData(null, Path);
        }

        var bytes = await _load!(cancellationToken).ConfigureAwait(false);
        return new OnnxModelData(bytes, null);
    }

    /// <inheritdoc/>
    public override string ToString() => Description;
}
