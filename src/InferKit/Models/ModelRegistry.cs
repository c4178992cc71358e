using System.Diagnostics.Metrics;
using System.Globalization;
using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.DependencyInjection;
using InferKit.LoadBalancing;
using InferKit.Scheduling;
using InferKit.Telemetry;
using InferKit.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace InferKit.Models;

/// <summary>The list of models registered through the builder, in order.</summary>
internal sealed class ModelRegistrations
{
    public List<string> Names { get; } = new();

    /// <summary>Virtual models (cascades, adaptive models) by name, with the factory that builds each over the registry.</summary>
    public List<VirtualRegistration> Virtuals { get; } = new();
}

/// <summary>A virtual model registered through the builder.</summary>
/// <param name="Name">Its name.</param>
/// <param name="Kind">"cascade" or "adaptive".</param>
/// <param name="Members">The real models it routes to.</param>
/// <param name="Validate">Lists configuration errors.</param>
/// <param name="Create">Builds it over the registry.</param>
internal sealed record VirtualRegistration(
    string Name,
    string Kind,
    Func<IReadOnlyList<string>> Members,
    Func<IReadOnlyList<string>> Validate,
    Func<ModelRegistry, TimeProvider, Selection.SelectionMetrics, Selection.IVirtualModel> Create);

/// <summary>
/// Holds every model: its options, its loaded version (instances + scheduler) and its state. Also the in-process
/// client: <see cref="InferAsync(string, string?, InferenceRequest, CancellationToken)"/> resolves the model and hands
/// the request to its scheduler. Loading, warming, draining and disposal live here; the request path does not change
/// when versions, hot swap or scaling are added (they replace <see cref="ModelEntry.Current"/>).
/// </summary>
internal sealed class ModelRegistry : IModelRegistry, IInferenceClient, IAsyncDisposable, IDisposable
{
    /// <summary>The longest wait for a load that is timed; a request whose deadline is further away waits without a timer.</summary>
    private static readonly TimeSpan LongestTimedWait = TimeSpan.FromDays(30);

    private readonly Dictionary<string, ModelEntry> _entries;
    private readonly Dictionary<string, Selection.IVirtualModel> _virtuals = new(StringComparer.Ordinal);
    private readonly string[] _names;
    private readonly IOptionsMonitor<ModelOptions> _modelOptions;
    private readonly InferKitOptions _options;
    private readonly Dictionary<string, ILoadBalancingStrategy> _strategies;
    private readonly IServiceProvider _services;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly InferKitMetrics _metrics;
    private readonly IRandomSource _random;
    private int _disposed;

    /// <summary>
    /// Set by <see cref="DrainAsync"/>: every model refuses new work from then on, including one with no loaded version
    /// (no load starts for it) and one whose load finishes later (it is published draining).
    /// </summary>
    private volatile bool _draining;

    /// <summary>
    /// When the first drain began (0: none). Disposal after a drain unloads within what is left of the drain timeout from
    /// then: the whole shutdown (the host's stop, then its disposal) ends within one drain timeout, not two.
    /// </summary>
    private long _drainStarted;

    /// <summary>Completed when disposal begins: requests waiting for a load stop waiting (no load publishes after it).</summary>
    private readonly TaskCompletionSource _disposing = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ModelRegistry(
        ModelRegistrations registrations,
        IOptionsMonitor<ModelOptions> modelOptions,
        IOptions<InferKitOptions> options,
        IEnumerable<ILoadBalancingStrategy> strategies,
        IServiceProvider services,
        TimeProvider time,
        ILoggerFactory loggerFactory,
        InferKitMetrics metrics)
    {
        _modelOptions = modelOptions;
        _options = options.Value;
        _services = services;
        _time = time;
        _loggerFactory = loggerFactory;
        _logger = SafeLogger.Create(loggerFactory, "InferKit");
        _metrics = metrics;
        _random = new DefaultRandomSource(_options.RandomSeed);
        _strategies = new Dictionary<string, ILoadBalancingStrategy>(StringComparer.OrdinalIgnoreCase);
        foreach (var s in strategies)
        {
            _strategies.TryAdd(s.Name, s);
        }

        // Validate every model now, so a host-less ServiceProvider fails as early and as completely as ValidateOnStart.
        var errors = new List<string>();
        _entries = new Dictionary<string, ModelEntry>(StringComparer.Ordinal);
        foreach (var name in registrations.Names)
        {
            try
            {
                var o = modelOptions.Get(name);
                _entries[name] = new ModelEntry(name, o);
            }
            catch (OptionsValidationException ex)
            {
                errors.AddRange(ex.Failures);
            }
        }

        var selectionMetrics = new Selection.SelectionMetrics(metrics.Meter);
        foreach (var v in registrations.Virtuals)
        {
            var before = errors.Count;
            errors.AddRange(v.Validate());
            foreach (var member in v.Members())
            {
                if (!_entries.ContainsKey(member))
                {
                    errors.Add(registrations.Virtuals.Any(o => o.Name == member)
                        ? $"{v.Kind} '{v.Name}': member '{member}' is itself a virtual model; members must be registered models."
                        : $"{v.Kind} '{v.Name}': member '{member}' is not a registered model. Registered models: {string.Join(", ", registrations.Names)}.");
                }
            }

            if (errors.Count == before)
            {
                _virtuals[v.Name] = v.Create(this, time, selectionMetrics);
            }
        }

        if (errors.Count > 0)
        {
            throw new OptionsValidationException(string.Join(", ", registrations.Names.Concat(registrations.Virtuals.Select(static v => v.Name))), typeof(ModelOptions), errors);
        }

        _names = registrations.Names.Concat(registrations.Virtuals.Select(static v => v.Name)).ToArray();
        metrics.RegisterInstances(this, ObserveInflight, ObserveInstances);
        metrics.RegisterModelStates(this, this);
    }

    public IReadOnlyList<string> ModelNames => _names;

    public bool AllRequiredModelsReady
    {
        get
        {
            foreach (var e in _entries.Values)
            {
                if (e.Options.Required && e.Current?.State != ModelState.Ready)
                {
                    return false;
                }
            }

            return true;
        }
    }

    public ModelInfo GetModel(string name, string? version = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_virtuals.TryGetValue(name, out var virtualModel))
        {
            if (version is not null && version != Selection.VirtualModel.Version)
            {
                throw new ModelNotFoundException(name, version, [Selection.VirtualModel.Version]);
            }

            return DescribeVirtual(virtualModel);
        }

        var entry = Find(name);
        var dep = entry.Current;
        if (version is not null && !string.Equals(version, entry.Options.Version, StringComparison.Ordinal))
        {
            throw new ModelNotFoundException(name, version, [entry.Options.Version]);
        }

        var state = dep?.State ?? entry.State;
        return new ModelInfo(name, entry.Options.Version, [entry.Options.Version], state, dep?.Signature,
            dep is null ? [] : dep.Pool.Instances.Select(static i => i.ToInfo()).ToArray(), entry.Error, entry.Options.Required,
            entry.Options.BackendFactory is null ? "onnxruntime" : "custom", "model", dep?.Scheduler.QueueLength ?? 0, dep?.Scheduler.Active ?? 0);
    }

    /// <summary>
    /// Describes a virtual model from its members. It is <see cref="ModelState.Ready"/> only when every member is: a
    /// cascade needs each stage to answer the rows the stage before it is unsure of, and an adaptive model needs each
    /// variant to choose among them. Otherwise it still answers what it can (a cascade keeps an earlier stage's answer,
    /// an adaptive model steps to another variant; a response's AnsweredBy, RowStages and Note say which), but it does not serve as configured: its
    /// state is that of the member furthest from serving (Failed, then Unloaded, Draining, NotLoaded, Loading), and
    /// <see cref="ModelInfo.Error"/> names each member that is not ready and why. Its signature is its first loaded member's.
    /// </summary>
    private ModelInfo DescribeVirtual(Selection.IVirtualModel virtualModel)
    {
        var state = ModelState.Ready;
        ModelSignature? signature = null;
        string? platform = null;
        List<string>? problems = null;
        for (int i = 0; i < virtualModel.Members.Count; i++)
        {
            var member = GetModel(virtualModel.Members[i]);
            signature ??= member.Signature;
            platform ??= member.Platform;
            if (member.State == ModelState.Ready)
            {
                continue;
            }

            if (DistanceFromServing(member.State) > DistanceFromServing(state))
            {
                state = member.State;
            }

            string why = member.State switch
            {
                ModelState.Failed => $"failed to load: {member.Error ?? "unknown error"}",
                ModelState.NotLoaded => "is not loaded",
                ModelState.Loading => "is loading",
                ModelState.Draining => "is draining and takes no new requests",
                ModelState.Unloaded => "is unloaded",
                _ => $"is {member.State}",
            };
            (problems ??= []).Add($"{virtualModel.DescribeMember(i)} {why}");
        }

        return new ModelInfo(virtualModel.Name, Selection.VirtualModel.Version, [Selection.VirtualModel.Version], state, signature, [], problems is null ? null : string.Join("; ", problems),
            false, platform ?? "custom", virtualModel.Kind);

        static int DistanceFromServing(ModelState s) => s switch
        {
            ModelState.Ready => 0,
            ModelState.Loading => 1,
            ModelState.NotLoaded => 2,
            ModelState.Draining => 3,
            ModelState.Unloaded => 4,
            _ => 5, // Failed
        };
    }

    public Task LoadAsync(string name, CancellationToken cancellationToken = default) => EnsureLoadedAsync(Find(name), cancellationToken);

    public async Task LoadAllAsync(CancellationToken cancellationToken = default)
    {
        var tasks = _entries.Values.Select(e => (Entry: e, Task: EnsureLoadedAsync(e, cancellationToken))).ToArray();
        var failures = new List<Exception>();
        foreach (var (entry, task) in tasks)
        {
            try
            {
                await task.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                if (entry.Options.Required)
                {
                    failures.Add(ex);
                }
            }
        }

        if (failures.Count == 1)
        {
            throw failures[0];
        }

        if (failures.Count > 1)
        {
            throw new AggregateException("Several required models failed to load.", failures);
        }
    }

    public async Task<bool> DrainAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        // Checked before anything changes: an invalid call must not close admission and then fail.
        if (timeout != Timeout.InfiniteTimeSpan && (timeout < TimeSpan.Zero || timeout > ModelOptionsValidator.MaxDuration))
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout,
                $"The drain timeout must be between zero and {ModelOptionsValidator.MaxDuration} (the longest a timer waits), or Timeout.InfiniteTimeSpan to wait without a limit.");
        }

        Interlocked.CompareExchange(ref _drainStarted, _time.GetTimestamp(), 0);

        // Set before the deployments are read, each under its entry's lock, which a load takes to publish its deployment:
        // either the drain sees that deployment here, or the load sees the drain and publishes it draining.
        _draining = true;
        var deployments = new List<ModelDeployment>(_entries.Count);
        foreach (var e in _entries.Values)
        {
            lock (e)
            {
                if (e.Current is { } d)
                {
                    d.State = ModelState.Draining;
                    deployments.Add(d);
                }
            }
        }

        var results = await Task.WhenAll(deployments.Select(d => d.Scheduler.DrainAsync(timeout, cancellationToken))).ConfigureAwait(false);
        return results.All(static r => r);
    }

    public ValueTask<InferenceResponse> InferAsync(string model, InferenceRequest request, CancellationToken cancellationToken = default)
        => InferAsync(model, null, request, cancellationToken);

    public ValueTask<InferenceResponse> InferAsync(string model, string? version, InferenceRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(request);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_virtuals.Count > 0 && _virtuals.TryGetValue(model, out var virtualModel))
        {
            if (version is not null && version != Selection.VirtualModel.Version)
            {
                throw new ModelNotFoundException(model, version, [Selection.VirtualModel.Version]);
            }

            return virtualModel.InferAsync(request, cancellationToken);
        }

        return InferRealAsync(model, version, request, cancellationToken);
    }

    /// <summary>Runs a request on a registered (real) model.</summary>
    internal ValueTask<InferenceResponse> InferRealAsync(string model, string? version, InferenceRequest request, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(model, out var entry))
        {
            throw new ModelNotFoundException(model, null, _names);
        }

        if (version is not null && !string.Equals(version, entry.Options.Version, StringComparison.Ordinal))
        {
            throw new ModelNotFoundException(model, version, [entry.Options.Version]);
        }

        var dep = entry.Current;
        if (dep is not null)
        {
            return dep.Scheduler.InferAsync(request, cancellationToken);
        }

        if (_draining)
        {
            return new ValueTask<InferenceResponse>(RefuseShuttingDown(entry, request));
        }

        return InferWhenLoadedAsync(entry, request, cancellationToken);
    }

    /// <summary>
    /// Runs a request on a member of a virtual model that has another way to answer it (a cascade's later stage, whose
    /// rows keep the earlier stage's answer; an adaptive model's variant while another one serves). Unlike a direct call,
    /// it does not wait for a member that is not loaded yet, loading or that failed to load: the member refuses at once
    /// (<see cref="RefusalReason.ModelNotReady"/>, counted like any refusal), so the virtual model answers the other way
    /// within the request's deadline, however long the load takes. A member not loaded yet starts loading in the
    /// background, and a failed member's load is retried there, as a direct request would retry it, so the member comes
    /// (back) into service for later requests.
    /// </summary>
    internal ValueTask<InferenceResponse> InferMemberAsync(string model, InferenceRequest request, CancellationToken cancellationToken)
    {
        if (!_entries.TryGetValue(model, out var entry))
        {
            throw new ModelNotFoundException(model, null, _names);
        }

        if (entry.Current is { } dep)
        {
            return dep.Scheduler.InferAsync(request, cancellationToken);
        }

        if (_draining)
        {
            return new ValueTask<InferenceResponse>(RefuseShuttingDown(entry, request));
        }

        var state = entry.State;
        if (state is not (ModelState.NotLoaded or ModelState.Loading or ModelState.Failed))
        {
            return InferWhenLoadedAsync(entry, request, cancellationToken);
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<InferenceResponse>(cancellationToken);
        }

        if (state != ModelState.Loading)
        {
            LoadInBackground(entry);
        }

        string why = state switch
        {
            ModelState.NotLoaded => "it is not loaded yet; its load has started in the background.",
            ModelState.Loading => "it is still loading.",
            _ => $"it failed to load ({entry.Error ?? "unknown error"}); the load is being retried.",
        };
        return new ValueTask<InferenceResponse>(_metrics.ForModel(entry.Name, entry.Options.Version).Refused(request,
            InferenceResponse.Refused(entry.Name, request.Id, RefusalReason.ModelNotReady, null, $"Model '{entry.Name}' is not available: {why}")));
    }

    /// <summary>
    /// The largest <see cref="Scheduling.BatchingOptions.DeliveryMargin"/> (time kept in hand before a deadline for handing
    /// a result to its caller) among <paramref name="models"/>; zero for none.
    /// </summary>
    internal TimeSpan LargestDeliveryMargin(IEnumerable<string> models)
        => models.Select(m => Find(m).Options.Batching.DeliveryMargin).DefaultIfEmpty(TimeSpan.Zero).Max();

    /// <summary>Whether the loaded model's axis 0 is a batch axis (<see cref="ModelSignature.IsBatchable"/>); null when it is not loaded.</summary>
    internal bool? IsBatchable(string model) => _entries.TryGetValue(model, out var e) ? e.Current?.Signature.IsBatchable : null;

    /// <summary>True once <see cref="DrainAsync"/> began: no model takes new work, and no load starts for a request.</summary>
    internal bool IsDraining => _draining;

    /// <summary>True when the model has a loaded version that takes requests now (no load to wait for).</summary>
    internal bool IsLoaded(string model) => _entries.TryGetValue(model, out var e) && e.Current is not null;

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // No load publishes from now on: requests waiting for one are answered now, not when (or if) it ends.
        _disposing.TrySetResult();

        _metrics.Unregister(this);

        // Every model unloads at once, under one deadline: the whole disposal ends within the drain timeout, however
        // many models wait for a hung warm-up, a long batch or a backend whose Dispose blocks. After a drain, that is the
        // drain's timeout: what still runs once it passed is disposed in the background when it ends, as at any timeout.
        long drainStarted = Volatile.Read(ref _drainStarted);
        long started = drainStarted != 0 ? drainStarted : _time.GetTimestamp();
        var unloads = new Task[_entries.Count];
        int n = 0;
        foreach (var entry in _entries.Values)
        {
            unloads[n++] = UnloadAsync(entry, started);
        }

        await Task.WhenAll(unloads).ConfigureAwait(false);
    }

    /// <summary>Unloads one model within what is left of the drain timeout that started at <paramref name="started"/>.</summary>
    private async Task UnloadAsync(ModelEntry entry, long started)
    {
        var loading = entry.LoadTask;
        if (loading is not null)
        {
            try
            {
                // A load can hang (a warm-up that never returns): wait at most the drain timeout. A load that ends
                // later sees _disposed and unloads what it built instead of publishing it.
                await loading.WaitAsync(RemainingDrain(started), _time).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // A failed load left nothing to dispose; one still running disposes its own work.
            }
        }

        ModelDeployment? current;
        lock (entry)
        {
            current = entry.Current;
            entry.Current = null;
        }

        if (current is { } dep)
        {
            await dep.DisposeAsync(RemainingDrain(started), _time, _logger).ConfigureAwait(false);
            Log.ModelUnloaded(_logger, entry.Name, dep.Version);
        }

        entry.State = ModelState.Unloaded;
    }

    /// <summary>What is left of the drain timeout that started at <paramref name="started"/> (zero once it passed).</summary>
    private TimeSpan RemainingDrain(long started)
    {
        var left = _options.DrainTimeout - _time.GetElapsedTime(started);
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }

    /// <summary>
    /// Runs a request on a model that has no loaded version yet, once its load (started here when none runs) finishes. A
    /// request with a deadline (its timeout or deadline, else the model's <see cref="Scheduling.BatchingOptions.DefaultTimeout"/>,
    /// as the scheduler reads them) waits for the load only until that deadline less the delivery margin; then it is
    /// refused with <see cref="RefusalReason.ModelNotReady"/> while the load goes on in the background. It keeps that
    /// deadline once the load has finished: time spent waiting for the load counts against it. A request with no deadline
    /// at all waits for the whole load.
    /// </summary>
    private async ValueTask<InferenceResponse> InferWhenLoadedAsync(ModelEntry entry, InferenceRequest request, CancellationToken cancellationToken)
    {
        RequestChecks.Check(entry.Name, request);
        var due = RequestChecks.Deadline(request, entry.Options.Batching.DefaultTimeout, _time.GetUtcNow());
        try
        {
            if (due is not DateTimeOffset d)
            {
                // The whole load, unless the registry is disposed first: then no load publishes any more, and the request
                // would wait for one that may hang (a warm-up that never returns) for ever.
                var load = EnsureLoadedAsync(entry, cancellationToken);
                if (!load.IsCompleted)
                {
                    await Task.WhenAny(load, _disposing.Task).ConfigureAwait(false);
                    if (!load.IsCompleted)
                    {
                        return RefuseShuttingDown(entry, request);
                    }
                }

                await load.ConfigureAwait(false);
            }
            else if (!await WaitForLoadAsync(entry, d, cancellationToken).ConfigureAwait(false))
            {
                return _disposed != 0 ? RefuseShuttingDown(entry, request) : RefuseStillLoading(entry, request, d);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            if (_disposed != 0)
            {
                return RefuseShuttingDown(entry, request);
            }

            return _metrics.ForModel(entry.Name, entry.Options.Version).Refused(request, InferenceResponse.Refused(entry.Name, request.Id, RefusalReason.ModelNotReady, null,
                $"Model '{entry.Name}' is not available: {entry.Error ?? ex.Message}"));
        }

        var dep = entry.Current;
        if (dep is null)
        {
            if (_disposed != 0)
            {
                return RefuseShuttingDown(entry, request);
            }

            return _metrics.ForModel(entry.Name, entry.Options.Version).Refused(request,
                InferenceResponse.Refused(entry.Name, request.Id, RefusalReason.ModelNotReady, null, $"Model '{entry.Name}' is not loaded."));
        }

        // The deadline fixed on arrival, not a timeout counted again from now.
        var admitted = due is DateTimeOffset fixedDue ? Selection.RowOps.WithInputs(request, request.InputArray, fixedDue, asCaller: true) : request;
        return await dep.Scheduler.InferAsync(admitted, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Starts or joins the model's load and waits for it until only the delivery margin is left before
    /// <paramref name="due"/>. True when the load finished (a failed load throws its error here); false when the time ran
    /// out first, the load going on in the background, or when the registry's disposal began first.
    /// </summary>
    private async Task<bool> WaitForLoadAsync(ModelEntry entry, DateTimeOffset due, CancellationToken cancellationToken)
    {
        var load = LoadInBackground(entry);
        if (!await FinishesWithinAsync(load.IsCompleted ? load : Task.WhenAny(load, _disposing.Task), due - _time.GetUtcNow() - entry.Options.Batching.DeliveryMargin, _time, cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        if (!load.IsCompleted)
        {
            return false; // the registry is being disposed: no load publishes any more
        }

        await load.ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// True once <paramref name="task"/> has completed (its failure is not observed here), within <paramref name="within"/>
    /// on <paramref name="time"/>; false when that time runs out first, at once when none is left. A wait longer than
    /// <see cref="LongestTimedWait"/> takes no timer.
    /// </summary>
    internal static async Task<bool> FinishesWithinAsync(Task task, TimeSpan within, TimeProvider time, CancellationToken cancellationToken)
    {
        if (task.IsCompleted)
        {
            return true;
        }

        if (within <= TimeSpan.Zero)
        {
            return false;
        }

        try
        {
            // WhenAny: a timeout here is the wait's, never a task that failed with a TimeoutException.
            await Task.WhenAny(task).WaitAsync(within > LongestTimedWait ? Timeout.InfiniteTimeSpan : within, time, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>The retry-after hint for a request refused while a load runs: how long it has run so far (a load is expected to need about as long again), at least 1 ms.</summary>
    internal static TimeSpan RetryAfterLoading(TimeSpan loadingFor) => loadingFor < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : loadingFor;

    /// <summary>The refusal for a request whose deadline came before the model's load finished.</summary>
    private InferenceResponse RefuseStillLoading(ModelEntry entry, InferenceRequest request, DateTimeOffset due)
    {
        var loadingFor = _time.GetElapsedTime(entry.LoadStarted);
        return RefuseNotReady(entry, request, RetryAfterLoading(loadingFor), string.Create(CultureInfo.InvariantCulture,
            $"Model '{entry.Name}' is not available: it is still loading ({loadingFor.TotalMilliseconds:F0} ms so far), and the load did not finish in time for the request's deadline ({(due - _time.GetUtcNow()).TotalMilliseconds:F1} ms away, {entry.Options.Batching.DeliveryMargin.TotalMilliseconds:F1} ms of it kept as the delivery margin). The load goes on in the background."));
    }

    /// <summary>
    /// Starts the model's load in the background: its first load, or the retry of a failed one, unless one runs already.
    /// Returns the load, which completes (faulted when it fails) once the model is loaded or failed to load; a failure is
    /// logged by the load itself and never has to be observed.
    /// </summary>
    internal Task LoadInBackground(string model) => LoadInBackground(Find(model));

    private Task LoadInBackground(ModelEntry entry)
    {
        if (_disposed != 0)
        {
            return Task.CompletedTask;
        }

        if (_draining)
        {
            // Shutting down: no load starts (or is retried) for a request; one already running goes on.
            var running = entry.LoadTask;
            return running is { IsCompleted: false } ? running : Task.CompletedTask;
        }

        Task load;
        try
        {
            load = EnsureLoadedAsync(entry, CancellationToken.None);
        }
        catch (ObjectDisposedException)
        {
            return Task.CompletedTask;
        }

        // Nobody has to await this load: observe its failure, which LoadCoreAsync has logged and recorded in entry.Error.
        load.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return load;
    }

    /// <summary>How long the model's current load has been running; null when it is not loading.</summary>
    internal TimeSpan? LoadingFor(string model)
    {
        var entry = Find(model);
        long started = entry.LoadStarted;
        return entry.State == ModelState.Loading && entry.Current is null ? _time.GetElapsedTime(started) : null;
    }

    /// <summary>
    /// A refusal for a request that a virtual model could not give to <paramref name="model"/> or any other member because
    /// none was loaded in time: <see cref="RefusalReason.ModelNotReady"/>, counted under <paramref name="model"/> like its own.
    /// </summary>
    internal InferenceResponse RefuseNotReady(string model, InferenceRequest request, TimeSpan? retryAfter, string message)
        => RefuseNotReady(Find(model), request, retryAfter, message);

    /// <summary>The refusal for a request to a model with no loaded version once the registry drains: no load starts for it.</summary>
    private InferenceResponse RefuseShuttingDown(ModelEntry entry, InferenceRequest request)
    {
        RequestChecks.Check(entry.Name, request);
        return _metrics.ForModel(entry.Name, entry.Options.Version).Refused(request,
            InferenceResponse.Refused(entry.Name, request.Id, RefusalReason.ShuttingDown, null, $"Model '{entry.Name}' is shutting down and takes no new requests."));
    }

    private InferenceResponse RefuseNotReady(ModelEntry entry, InferenceRequest request, TimeSpan? retryAfter, string message)
        => _metrics.ForModel(entry.Name, entry.Options.Version).Refused(request,
            InferenceResponse.Refused(entry.Name, request.Id, RefusalReason.ModelNotReady, retryAfter, message));

    /// <summary>Predicted seconds until a request to a loaded model would be answered; null when unknown.</summary>
    internal double? PredictLatency(string model, InferencePriority priority, int rows)
        => _entries.TryGetValue(model, out var e) ? e.Current?.Scheduler.PredictLatency(priority, rows) : null;

    /// <summary>The scheduler of a loaded model (tests and diagnostics).</summary>
    internal ModelScheduler GetScheduler(string name) => Find(name).Current?.Scheduler
        ?? throw new InvalidOperationException($"Model '{name}' is not loaded.");

    private ModelEntry Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _entries.TryGetValue(name, out var e) ? e : throw new ModelNotFoundException(name, null, _names);
    }

    private Task EnsureLoadedAsync(ModelEntry entry, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        lock (entry)
        {
            if (entry.LoadTask is null || (entry.LoadTask.IsFaulted && entry.State == ModelState.Failed && entry.RetryLoad))
            {
                entry.RetryLoad = false;
                entry.State = ModelState.Loading;
                entry.LoadStarted = _time.GetTimestamp();
                entry.LoadTask = Task.Run(() => LoadCoreAsync(entry), CancellationToken.None);
            }

            return entry.LoadTask.WaitAsync(cancellationToken);
        }
    }

    private async Task LoadCoreAsync(ModelEntry entry)
    {
        var options = entry.Options;
        long started = _time.GetTimestamp();
        IBackendSource? source = null;
        ModelInstance[] instances = [];
        try
        {
            var logger = SafeLogger.Create(_loggerFactory, "InferKit.Models");
            source = options.BackendFactory is not null
                ? new DelegateBackendSource(options.BackendFactory)
                : await OnnxBackendSource.CreateAsync(entry.Name, options.Source!, _options.OnnxThreadPool, options.Onnx.SharePrepackedWeights,
                    options.AxisZeroIsBatch == false ? false : null, TotalOnnxInstances(), logger, CancellationToken.None).ConfigureAwait(false);

            var plan = PlanInstances(options);
            var created = new IModelBackend?[plan.Count];
            try
            {
                await Parallel.ForEachAsync(Enumerable.Range(0, plan.Count), (i, _) =>
                {
                    var (group, settings) = plan[i];
                    created[i] = source.CreateInstance(new ModelInstanceContext(entry.Name, options.Version, i, group, _services), settings);
                    return ValueTask.CompletedTask;
                }).ConfigureAwait(false);
            }
            catch
            {
                foreach (var b in created)
                {
                    DisposeQuietly(b, entry.Name, "a backend instance", _logger);
                }

                throw;
            }

            var signature = created[0]!.Signature;
            if (options.AxisZeroIsBatch == false)
            {
                signature = signature.WithoutBatching();
            }

            for (int i = 1; i < created.Length; i++)
            {
                if (!SameSignature(signature, created[i]!.Signature))
                {
                    foreach (var b in created)
                    {
                        DisposeQuietly(b, entry.Name, "a backend instance", _logger);
                    }

                    throw new ModelLoadException(entry.Name, $"instance {i} reports a different signature from instance 0.");
                }
            }

            instances = new ModelInstance[created.Length];
            for (int i = 0; i < created.Length; i++)
            {
                var group = plan[i].Group;
                // An ONNX CPU instance with lanes runs that many batches at once (OnnxSessionSettings.Lanes).
                int lanes = created[i] is OnnxModelBackend onnx ? onnx.Lanes : 1;
                instances[i] = new ModelInstance(i, $"{entry.Name}/{options.Version}/{i}", created[i]!, group?.Weight,
                    Math.Max(group?.MaxConcurrency ?? options.MaxConcurrencyPerInstance, lanes), options.Health, _time);
            }

            // Read from the user's backends now, not once the version is published: a throw then would reach the failure
            // handling below, which disposes the instances of a version already serving.
            string providers = string.Join("+", instances.Select(static i => i.Backend.Provider.Name).Distinct());

            // Warm up every instance (in parallel) before it counts as ready; the timings seed the latency model.
            var warmup = new double[Math.Max(1, options.Batching.MaxBatchSize) + 1];
            int warmRows = signature.IsBatchable && options.Batching.Enabled ? Math.Max(1, options.Batching.MaxBatchSize) : 1;
            await Parallel.ForEachAsync(instances, (instance, _) =>
            {
                Warmup(entry.Name, instance, signature, options, warmRows, warmup);
                return ValueTask.CompletedTask;
            }).ConfigureAwait(false);

            var strategy = _strategies[options.LoadBalancing];
            var selector = strategy.CreateSelector(new LoadBalancingContext(entry.Name, instances.Length, _random));
            var schedulingLogger = SafeLogger.Create(_loggerFactory, "InferKit.Scheduling");
            var pool = new InstancePool(instances, selector, _time, entry.Name, strategy.Name, schedulingLogger);
            var scheduler = new ModelScheduler(entry.Name, options.Version, signature, pool, options, _time, schedulingLogger, _metrics);
            for (int rows = 1; rows < warmup.Length; rows++)
            {
                if (warmup[rows] > 0)
                {
                    scheduler.Latency.Record(rows, warmup[rows]);
                }
            }

            var deployment = new ModelDeployment(options.Version, signature, pool, scheduler, source) { State = ModelState.Ready };
            double elapsed = _time.GetElapsedTime(started).TotalSeconds;
            if (_metrics.ModelLoadDuration.Enabled)
            {
                _metrics.ModelLoadDuration.SafeRecord(elapsed, InferKitMetrics.ModelTags(entry.Name, options.Version));
            }

            // Published under the entry's lock, which the registry's disposal takes to read Current after setting
            // _disposed: either the disposal sees this deployment, or this load sees the disposal and unloads it.
            bool published;
            lock (entry)
            {
                published = _disposed == 0;
                if (published && _draining)
                {
                    // The registry began draining during this load: the version is published (its state says so) but
                    // takes no work; requests that waited for the load are refused by its scheduler as shutting down.
                    deployment.State = ModelState.Draining;
                    scheduler.StopAdmission();
                }

                if (published)
                {
                    scheduler.StartWatchdog();
                    entry.Current = deployment;
                    entry.State = ModelState.Ready;
                    entry.Error = null;
                }
            }

            if (!published)
            {
                instances = []; // disposed with the deployment, not again below
                source = null;
                await deployment.DisposeAsync(_options.DrainTimeout, _time, _logger).ConfigureAwait(false);
                throw new ObjectDisposedException(nameof(ModelRegistry));
            }
            Log.ModelLoaded(_logger, entry.Name, options.Version, instances.Length, providers, elapsed * 1000);
        }
        catch (Exception ex)
        {
            // A backend whose Dispose throws must not hide why the load failed, nor leave the model "loading" for ever.
            foreach (var i in instances)
            {
                DisposeQuietly(i, entry.Name, $"instance {i.Id}", _logger);
            }

            DisposeQuietly(source, entry.Name, "its backend source", _logger);
            entry.State = ModelState.Failed;
            entry.Error = ex.Message;
            entry.RetryLoad = true;
            Log.ModelLoadFailed(_logger, entry.Name, ex);
            if (ex is ModelLoadException or ObjectDisposedException)
            {
                throw;
            }

            throw new ModelLoadException(entry.Name, ex.Message, ex);
        }
    }

    /// <summary>Disposes <paramref name="disposable"/>; an exception is logged, so the disposal of the rest goes on.</summary>
    internal static void DisposeQuietly(IDisposable? disposable, string model, string what, ILogger logger)
    {
        try
        {
            disposable?.Dispose();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Log.DisposeFailed(logger, model, what, ex);
        }
    }

    /// <summary>ONNX instances across every registered model: spinning threads only pay when there is one, and lanes share the cores among them.</summary>
    private int TotalOnnxInstances()
    {
        int total = 0;
        foreach (var e in _entries.Values)
        {
            if (e.Options.BackendFactory is null)
            {
                total += PlanInstances(e.Options).Count;
            }
        }

        return total;
    }

    private static List<(InstanceGroupOptions? Group, OnnxSessionSettings Settings)> PlanInstances(ModelOptions options)
    {
        var plan = new List<(InstanceGroupOptions?, OnnxSessionSettings)>();
        if (options.InstanceGroups.Count == 0)
        {
            for (int i = 0; i < options.Instances; i++)
            {
                plan.Add((null, options.Onnx));
            }

            return plan;
        }

        foreach (var g in options.InstanceGroups)
        {
            for (int i = 0; i < g.Count; i++)
            {
                plan.Add((g, g.Onnx));
            }
        }

        return plan;
    }

    private void Warmup(string model, ModelInstance instance, ModelSignature signature, ModelOptions options, int maxRows, double[] timings)
    {
        if (options.WarmupRuns == 0)
        {
            return;
        }

        long started = _time.GetTimestamp();
        var sink = new DiscardingSink();
        int[] sizes = maxRows > 1 ? [1, maxRows] : [1];
        foreach (int rows in sizes)
        {
            var inputs = ZeroInputs(signature, options, rows);
            for (int run = 0; run < options.WarmupRuns; run++)
            {
                long t0 = _time.GetTimestamp();
                instance.Backend.Run(inputs, sink, CancellationToken.None);
                if (run == options.WarmupRuns - 1)
                {
                    double seconds = _time.GetElapsedTime(t0).TotalSeconds;
                    lock (timings)
                    {
                        timings[Math.Min(rows, timings.Length - 1)] = Math.Max(timings[Math.Min(rows, timings.Length - 1)], seconds);
                    }
                }
            }
        }

        Log.InstanceWarmedUp(_logger, model, instance.Id, _time.GetElapsedTime(started).TotalMilliseconds);
    }

    private static Tensor[] ZeroInputs(ModelSignature signature, ModelOptions options, int rows)
    {
        var inputs = new Tensor[signature.Inputs.Count];
        for (int i = 0; i < inputs.Length; i++)
        {
            var spec = signature.Inputs[i];
            var shape = new long[spec.Rank];
            for (int d = 0; d < shape.Length; d++)
            {
                long dim = spec.Shape[d];
                if (dim >= 0)
                {
                    shape[d] = dim;
                }
                else if (d == 0 && signature.IsBatchable)
                {
                    shape[d] = rows;
                }
                else
                {
                    var name = spec.DimensionNames[d];
                    shape[d] = name is not null && options.Onnx.FreeDimensionOverrides.TryGetValue(name, out var v) ? v : 1;
                }
            }

            long count = Tensor.ElementCountOf(shape);
            inputs[i] = spec.ElementType == TensorElementType.String
                ? Tensor.Create(spec.Name, Enumerable.Repeat(string.Empty, (int)count).ToArray(), shape)
                : Tensor.FromBytes(spec.Name, spec.ElementType, new byte[count * spec.ElementType.SizeOf()], shape);
        }

        return inputs;
    }

    private static bool SameSignature(ModelSignature a, ModelSignature b)
    {
        static bool Same(IReadOnlyList<TensorSpec> x, IReadOnlyList<TensorSpec> y)
        {
            if (x.Count != y.Count)
            {
                return false;
            }

            for (int i = 0; i < x.Count; i++)
            {
                if (x[i].Name != y[i].Name || x[i].ElementType != y[i].ElementType || !x[i].Shape.SequenceEqual(y[i].Shape))
                {
                    return false;
                }
            }

            return true;
        }

        return Same(a.Inputs, b.Inputs) && Same(a.Outputs, b.Outputs);
    }

    private IEnumerable<Measurement<long>> ObserveInflight()
    {
        foreach (var e in _entries.Values)
        {
            if (e.Current is { } dep)
            {
                foreach (var i in dep.Pool.Instances)
                {
                    var tags = InferKitMetrics.ModelTags(e.Name, dep.Version);
                    tags.Add(InferKitTelemetry.InstanceTag, i.Id);
                    yield return new Measurement<long>(i.Outstanding, tags);
                }
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveInstances()
    {
        foreach (var e in _entries.Values)
        {
            if (e.Current is { } dep)
            {
                yield return new Measurement<long>(dep.Pool.Instances.Length, InferKitMetrics.ModelTags(e.Name, dep.Version));
            }
        }
    }

    private sealed class DiscardingSink : IBackendOutputSink
    {
        public void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data)
        {
        }

        public void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data)
        {
        }
    }
}

/// <summary>One registered model name: its options and the version that currently serves.</summary>
internal sealed class ModelEntry(string name, ModelOptions options)
{
    public string Name { get; } = name;

    public ModelOptions Options { get; } = options;

    /// <summary>The serving version; replaced atomically by a hot swap.</summary>
    public volatile ModelDeployment? Current;

    public Task? LoadTask { get; set; }

    public ModelState State { get; set; } = ModelState.NotLoaded;

    public string? Error { get; set; }

    public bool RetryLoad { get; set; }

    /// <summary>When the current (or last) load started, on the registry's clock.</summary>
    public long LoadStarted { get; set; }
}

/// <summary>One loaded version of a model: its instances, its scheduler and what they share.</summary>
internal sealed class ModelDeployment(string version, ModelSignature signature, InstancePool pool, ModelScheduler scheduler, IBackendSource source)
{
    public string Version { get; } = version;

    public ModelSignature Signature { get; } = signature;

    public InstancePool Pool { get; } = pool;

    public ModelScheduler Scheduler { get; } = scheduler;

    public ModelState State { get; set; }

    /// <summary>
    /// Refuses queued work, waits for running batches (a session must never be disposed under a run) and disposes
    /// the instances, each as soon as its last running batch releases it, then the backend source. Every
    /// <see cref="IDisposable.Dispose"/> runs on the thread pool, never on the caller's thread: the unload returns once
    /// everything is disposed, or after <paramref name="timeout"/> on <paramref name="time"/>, whichever comes first. What
    /// is not done then (a batch that still runs, a backend whose Dispose has not returned) is logged, naming the instance,
    /// and finishes in the background: an instance still running is disposed once its batch ends, each instance exactly
    /// once, and the source after every instance.
    /// </summary>
    public async Task DisposeAsync(TimeSpan timeout, TimeProvider time, ILogger logger)
    {
        State = ModelState.Unloaded;
        Scheduler.Dispose();
        string model = Scheduler.ModelName;

        // The bound's timer exists before any disposal starts, so a disposal seen running is already timed.
        using var stop = new CancellationTokenSource();
        var expired = Task.Delay(timeout, time, stop.Token);

        // Closed, not merely idle: an idle instance can still be reserved (by a batch that failed on another instance
        // and is retried, or by a caller admitted just before the scheduler was disposed). Each instance closes itself
        // when its last reservation is released (nothing polls) and is disposed as soon as it is closed.
        var instances = Pool.Instances;
        var closed = new Task[instances.Length];
        var disposed = new Task[instances.Length];
        for (int i = 0; i < instances.Length; i++)
        {
            var instance = instances[i];
            var whenClosed = instance.CloseWhenIdleAsync();
            closed[i] = whenClosed;
            disposed[i] = Task.Run(async () =>
            {
                await whenClosed.ConfigureAwait(false);
                ModelRegistry.DisposeQuietly(instance, model, $"instance {instance.Id}", logger);
            });
        }

        var finished = Task.Run(async () =>
        {
            await Task.WhenAll(disposed).ConfigureAwait(false);
            ModelRegistry.DisposeQuietly(source, model, "its backend source", logger);
        });

        if (await Task.WhenAny(finished, expired).ConfigureAwait(false) == finished)
        {
            stop.Cancel();
            return;
        }

        // Pending is what the instance itself says: its backend's Dispose has not returned (or never started). The work
        // item that ran it may still be finishing after the Dispose returned; that is not a disposal still under way.
        bool instancePending = false;
        for (int i = 0; i < instances.Length; i++)
        {
            if (!instances[i].DisposeReturned.IsCompleted)
            {
                instancePending = true;
                Log.DisposalPending(logger, model, Version, $"instance {instances[i].Id}", timeout,
                    closed[i].IsCompleted ? "its Dispose has not returned" : "a batch still runs on it");
            }
        }

        if (!instancePending)
        {
            Log.DisposalPending(logger, model, Version, "its backend source", timeout, "its Dispose has not returned");
        }
    }
}
