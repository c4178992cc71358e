using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using InferKit.Models;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace InferKit.Telemetry;

/// <summary>
/// InferKit's telemetry hub (one per service provider): the instruments of the "InferKit" Meter made through
/// <see cref="IMeterFactory"/>, one <see cref="ModelTelemetry"/> per model version (what the scheduler calls on the
/// request path), the audit pipelines, the alert monitor, and the timer that writes refusals and audit drops to the
/// log in aggregate.
/// </summary>
/// <remarks>
/// Cost when nothing listens: each instrument's <c>Enabled</c> is checked before any tag is built, the activity source's
/// listeners before any span is made; audit and alert windows exist only when configured. Nothing allocates then.
/// </remarks>
internal sealed class InferKitMetrics : IDisposable, IAsyncDisposable
{
    /// <summary>Bucket bounds (s) from 10 µs to 10 s: fits a sub-millisecond in-process call and a multi-second queue wait.</summary>
    internal static readonly double[] LatencyBuckets =
    [
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ];

    internal static readonly int[] BatchBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

    internal static readonly double[] LoadBuckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> _inflightSources = new();
    private readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> _instanceSources = new();
    private readonly ConcurrentDictionary<object, IModelRegistry> _stateSources = new();
    private readonly ConcurrentDictionary<(string Model, string Version), ModelTelemetry> _models = new();
    private readonly AuditPipeline[] _audit;
    private readonly long[] _auditDropsLogged;
    private readonly double _samplingRate;
    private readonly ILogger _logger;
    private readonly TimeSpan _summaryInterval;
    private readonly ITimer _summaryTimer;
    private readonly Lock _summaryGate = new();
    private long _sampled;
    private int _summaryArmed;
    private int _disposed;

    public InferKitMetrics(IMeterFactory? meterFactory)
        : this(meterFactory, null, null, null, null)
    {
    }

    public InferKitMetrics(IMeterFactory? meterFactory, TimeProvider? time, ILoggerFactory? loggerFactory, InferKitTelemetryOptions? options, IEnumerable<IInferenceAuditSink>? sinks)
    {
        options ??= new InferKitTelemetryOptions();
        Time = time ?? TimeProvider.System;
        loggerFactory ??= NullLoggerFactory.Instance;
        _logger = SafeLogger.Create(loggerFactory, "InferKit.Telemetry");
        _summaryInterval = ClampToTimer(options.LogSummaryInterval);
        if (meterFactory is not null)
        {
            _meter = meterFactory.Create(InferKitTelemetry.Name);
        }
        else
        {
            _meter = new Meter(InferKitTelemetry.Name);
            _ownsMeter = true;
        }

        RequestDuration = _meter.CreateHistogram<double>(InferKitTelemetry.Instruments.RequestDuration, "s", "Time from admission to answer, by outcome; its count is the request count.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        QueueDuration = _meter.CreateHistogram<double>(InferKitTelemetry.Instruments.QueueDuration, "s", "Time a request waited before its batch started.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        ComputeDuration = _meter.CreateHistogram<double>(InferKitTelemetry.Instruments.ComputeDuration, "s", "Time one batch ran on an instance.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        BatchSize = _meter.CreateHistogram<int>(InferKitTelemetry.Instruments.BatchSize, "{row}", "Rows per batch.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = BatchBuckets });
        Rejected = _meter.CreateCounter<long>(InferKitTelemetry.Instruments.Rejected, "{request}", "Requests refused, by reason.");
        ModelLoadDuration = _meter.CreateHistogram<double>(InferKitTelemetry.Instruments.ModelLoadDuration, "s", "Time to load and warm a model version.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LoadBuckets });
        DiscardedLate = _meter.CreateCounter<long>(InferKitTelemetry.Instruments.DiscardedLate, "{request}",
            "Results ready before the deadline that reached the caller after it, or inside the read margin just before it, and were answered DeadlineExceeded instead (also counted as deadline_exceeded in inferkit.request.duration).");
        AuditDropped = _meter.CreateCounter<long>(InferKitTelemetry.Instruments.AuditDropped, "{record}", "Audit records dropped because a sink's buffer was full.");
        _meter.CreateObservableGauge(InferKitTelemetry.Instruments.QueueLength, ObserveQueues, "{request}", "Requests waiting per model version.");
        _meter.CreateObservableUpDownCounter(InferKitTelemetry.Instruments.InstanceInflight, () => Collect(_inflightSources), "{batch}", "Batches running per instance.");
        _meter.CreateObservableUpDownCounter(InferKitTelemetry.Instruments.InstanceCount, () => Collect(_instanceSources), "{instance}", "Instances loaded per model version.");
        _meter.CreateObservableGauge(InferKitTelemetry.Instruments.ModelState, ObserveStates, unit: null,
            "1 for each model's current lifecycle state (not_loaded, loading, ready, failed, draining, unloaded), 0 for the others.");

        Alerts = new AlertMonitor(this, options.Alerts, Time, loggerFactory.CreateLogger("InferKit.Alerts"));
        if (Alerts.Enabled)
        {
            _meter.CreateObservableGauge(InferKitTelemetry.Instruments.AlertsActive, Alerts.Observe, unit: null, "1 while an alert rule fires for a model, else 0.");
        }

        var pipelines = new List<AuditPipeline>();
        if (sinks is not null)
        {
            var auditLogger = loggerFactory.CreateLogger("InferKit.Audit");
            foreach (var sink in sinks)
            {
                pipelines.Add(new AuditPipeline(sink, options.Audit, auditLogger, Time, _summaryInterval));
            }
        }

        _audit = [.. pipelines];
        _auditDropsLogged = new long[_audit.Length];
        _samplingRate = options.Audit.SamplingRate;
        CaptureTensorData = options.Audit.CaptureTensorData;
        _summaryTimer = Time.CreateTimer(static s => ((InferKitMetrics)s!).OnSummaryTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public Histogram<double> RequestDuration { get; }

    public Histogram<double> QueueDuration { get; }

    public Histogram<double> ComputeDuration { get; }

    public Histogram<int> BatchSize { get; }

    public Counter<long> Rejected { get; }

    public Histogram<double> ModelLoadDuration { get; }

    public Counter<long> AuditDropped { get; }

    public Counter<long> DiscardedLate { get; }

    public Meter Meter => _meter;

    public TimeProvider Time { get; }

    public AlertMonitor Alerts { get; }

    /// <summary>True when at least one audit sink is registered.</summary>
    public bool AuditEnabled => _audit.Length > 0;

    public bool CaptureTensorData { get; }

    internal IReadOnlyList<AuditPipeline> AuditPipelines => _audit;

    /// <summary>Every model version seen so far.</summary>
    public ICollection<ModelTelemetry> Models => _models.Values;

    /// <summary>
    /// A configured wait longer than a timer (and Task.WaitAsync) accepts, <see cref="ModelOptionsValidator.MaxDuration"/>
    /// (validation lets it through), means "as long as it takes": the longest one.
    /// </summary>
    internal static TimeSpan ClampToTimer(TimeSpan wait) => wait > ModelOptionsValidator.MaxDuration ? ModelOptionsValidator.MaxDuration : wait;

    /// <summary>Creates the hub from a service provider (used by AddInferKit).</summary>
    public static InferKitMetrics Create(IServiceProvider services) => new(
        services.GetService<IMeterFactory>(),
        services.GetService<TimeProvider>(),
        services.GetService<ILoggerFactory>(),
        services.GetService<IOptions<InferKitTelemetryOptions>>()?.Value,
        services.GetServices<IInferenceAuditSink>());

    /// <summary>The telemetry of one model version (created on first use, kept for the hub's lifetime).</summary>
    public ModelTelemetry ForModel(string model, string version)
        => _models.GetOrAdd((model, version), static (key, hub) => new ModelTelemetry(hub, key.Model, key.Version), this);

    public void RegisterInstances(object owner, Func<IEnumerable<Measurement<long>>> inflight, Func<IEnumerable<Measurement<long>>> count)
    {
        _inflightSources[owner] = inflight;
        _instanceSources[owner] = count;
    }

    /// <summary>Reports every model of <paramref name="registry"/> in <c>inferkit.model.state</c>.</summary>
    public void RegisterModelStates(object owner, IModelRegistry registry) => _stateSources[owner] = registry;

    public void Unregister(object owner)
    {
        _inflightSources.TryRemove(owner, out _);
        _instanceSources.TryRemove(owner, out _);
        _stateSources.TryRemove(owner, out _);
    }

    public static TagList ModelTags(string model, string version) => new()
    {
        { InferKitTelemetry.ModelTag, model },
        { InferKitTelemetry.VersionTag, version },
    };

    /// <summary>Audit sampling: true for an even, deterministic share of calls (the configured rate).</summary>
    public bool ShouldSample()
    {
        double rate = _samplingRate;
        if (rate >= 1)
        {
            return true;
        }

        if (rate <= 0)
        {
            return false;
        }

        long n = Interlocked.Increment(ref _sampled);
        return Math.Floor(n * rate) > Math.Floor((n - 1) * rate);
    }

    /// <summary>Hands a record to every sink's buffer; a full buffer drops it and counts the drop.</summary>
    public void Audit(InferenceAuditRecord record, in TagList tags)
    {
        foreach (var pipeline in _audit)
        {
            if (!pipeline.TryWrite(record))
            {
                if (AuditDropped.Enabled)
                {
                    AuditDropped.SafeAdd(1, tags);
                }

                RequestSummary();
            }
        }
    }

    /// <summary>Arms the summary timer unless it is armed: the next log summary comes one interval later.</summary>
    public void RequestSummary()
    {
        if (Volatile.Read(ref _summaryArmed) == 0 && Interlocked.Exchange(ref _summaryArmed, 1) == 0 && Volatile.Read(ref _disposed) == 0)
        {
            try
            {
                _summaryTimer.Change(_summaryInterval, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
                // Disposed meanwhile: the final flush logs what is left.
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _summaryTimer.Dispose();
        Alerts.Dispose();
        foreach (var p in _audit)
        {
            p.Dispose();
        }

        WriteSummaries();
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _summaryTimer.DisposeAsync().ConfigureAwait(false);
        await Alerts.DisposeAsync().ConfigureAwait(false);
        foreach (var p in _audit)
        {
            await p.DisposeAsync().ConfigureAwait(false);
        }

        WriteSummaries();
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    private void OnSummaryTimer()
    {
        WriteSummaries();
        Volatile.Write(ref _summaryArmed, 0);
        Interlocked.MemoryBarrier();
        if (HasUnlogged())
        {
            RequestSummary();
        }
    }

    /// <summary>Logs, per model and reason, the refusals since the last summary, and per sink the dropped audit records.</summary>
    private void WriteSummaries()
    {
        lock (_summaryGate)
        {
            foreach (var model in _models.Values)
            {
                for (int r = 1; r < TelemetryNames.ReasonCount; r++)
                {
                    long delta = model.TakeUnloggedRefusals(r);
                    if (delta > 0)
                    {
                        Log.RequestsRefused(_logger, model.Model, delta, TelemetryNames.Reason((RefusalReason)r));
                    }
                }
            }

            for (int i = 0; i < _audit.Length; i++)
            {
                long dropped = _audit[i].Dropped;
                long delta = dropped - _auditDropsLogged[i];
                if (delta > 0)
                {
                    _auditDropsLogged[i] = dropped;
                    Log.AuditRecordsDropped(_logger, _audit[i].SinkName, delta);
                }
            }
        }
    }

    private bool HasUnlogged()
    {
        lock (_summaryGate)
        {
            foreach (var model in _models.Values)
            {
                if (model.HasUnloggedRefusals())
                {
                    return true;
                }
            }

            for (int i = 0; i < _audit.Length; i++)
            {
                if (_audit[i].Dropped != _auditDropsLogged[i])
                {
                    return true;
                }
            }

            return false;
        }
    }

    private List<Measurement<long>> ObserveQueues()
    {
        var list = new List<Measurement<long>>();
        foreach (var model in _models.Values)
        {
            if (model.IsAttached)
            {
                list.Add(new Measurement<long>(model.QueueLength, model.Tags));
            }
        }

        return list;
    }

    private List<Measurement<int>> ObserveStates()
    {
        var list = new List<Measurement<int>>();
        foreach (var registry in _stateSources.Values)
        {
            foreach (var info in registry.DescribeAll())
            {
                for (int s = 0; s < TelemetryNames.StateCount; s++)
                {
                    var tags = ModelTags(info.Name, info.Version);
                    tags.Add(InferKitTelemetry.StateTag, TelemetryNames.State(s));
                    list.Add(new Measurement<int>((int)info.State == s ? 1 : 0, tags));
                }
            }
        }

        return list;
    }

    private static IEnumerable<Measurement<long>> Collect(ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> sources)
    {
        foreach (var source in sources.Values)
        {
            foreach (var m in source())
            {
                yield return m;
            }
        }
    }
}
