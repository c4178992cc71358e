using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace InferKit.Telemetry;

/// <summary>Names of InferKit's meter, activity source, instruments and tags.</summary>
public static class InferKitTelemetry
{
    /// <summary>The name of the Meter and the ActivitySource.</summary>
    public const string Name = "InferKit";

    /// <summary>Tag: the model name.</summary>
    public const string ModelTag = "inferkit.model";

    /// <summary>Tag: the model version.</summary>
    public const string VersionTag = "inferkit.model.version";

    /// <summary>Tag: the instance id.</summary>
    public const string InstanceTag = "inferkit.instance";

    /// <summary>Tag: how a request ended (success, refused, deadline_exceeded, cancelled, error).</summary>
    public const string OutcomeTag = "inferkit.outcome";

    /// <summary>Tag: why a request was refused.</summary>
    public const string ReasonTag = "reason";
}

/// <summary>InferKit's instruments, on one Meter made through <see cref="IMeterFactory"/>.</summary>
internal sealed class InferKitMetrics : IDisposable
{
    private static readonly double[] LatencyBuckets =
    [
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ];

    private static readonly int[] BatchBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> _queueSources = new();
    private readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> _inflightSources = new();
    private readonly ConcurrentDictionary<object, Func<IEnumerable<Measurement<long>>>> _instanceSources = new();

    public InferKitMetrics(IMeterFactory? meterFactory)
    {
        if (meterFactory is not null)
        {
            _meter = meterFactory.Create(InferKitTelemetry.Name);
        }
        else
        {
            _meter = new Meter(InferKitTelemetry.Name);
            _ownsMeter = true;
        }

        RequestDuration = _meter.CreateHistogram<double>("inferkit.request.duration", "s", "Time from admission to answer, by outcome.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        QueueDuration = _meter.CreateHistogram<double>("inferkit.request.queue.duration", "s", "Time a request waited before its batch started.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        ComputeDuration = _meter.CreateHistogram<double>("inferkit.batch.compute.duration", "s", "Time one batch ran on an instance.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        BatchSize = _meter.CreateHistogram<int>("inferkit.batch.size", "{row}", "Rows per batch.",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = BatchBuckets });
        Rejected = _meter.CreateCounter<long>("inferkit.requests.rejected", "{request}", "Requests refused, by reason.");
        ModelLoadDuration = _meter.CreateHistogram<double>("inferkit.model.load.duration", "s", "Time to load and warm a model version.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] });
        _meter.CreateObservableGauge("inferkit.queue.length", () => Collect(_queueSources), "{request}", "Requests waiting per model.");
        _meter.CreateObservableUpDownCounter("inferkit.instance.inflight", () => Collect(_inflightSources), "{batch}", "Batches running per instance.");
        _meter.CreateObservableUpDownCounter("inferkit.instance.count", () => Collect(_instanceSources), "{instance}", "Instances loaded per model.");
    }

    public Histogram<double> RequestDuration { get; }

    public Histogram<double> QueueDuration { get; }

    public Histogram<double> ComputeDuration { get; }

    public Histogram<int> BatchSize { get; }

    public Counter<long> Rejected { get; }

    public Histogram<double> ModelLoadDuration { get; }

    public Meter Meter => _meter;

    public void RegisterQueue(object owner, Func<IEnumerable<Measurement<long>>> observe) => _queueSources[owner] = observe;

    public void RegisterInstances(object owner, Func<IEnumerable<Measurement<long>>> inflight, Func<IEnumerable<Measurement<long>>> count)
    {
        _inflightSources[owner] = inflight;
        _instanceSources[owner] = count;
    }

    public void Unregister(object owner)
    {
        _queueSources.TryRemove(owner, out _);
        _inflightSources.TryRemove(owner, out _);
        _instanceSources.TryRemove(owner, out _);
    }

    public static TagList ModelTags(string model, string version) => new()
    {
        { InferKitTelemetry.ModelTag, model },
        { InferKitTelemetry.VersionTag, version },
    };

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
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
