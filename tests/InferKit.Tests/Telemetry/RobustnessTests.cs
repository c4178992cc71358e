using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using InferKit.Telemetry;

namespace InferKit.Tests.Telemetry;

/// <summary>User code plugged into telemetry (listeners, observers, sinks) that throws or blocks.</summary>
public sealed class RobustnessTests
{
    /// <summary>Request 2 holds the instance while 3..5 queue behind it (then run as a batch): every one must succeed.</summary>
    internal static async Task HeldAndQueuedRequestsSucceedAsync(TelemetryHarness h)
    {
        var first = await h.OccupyAsync(2);
        var queued = Enumerable.Range(3, 3).Select(i => h.Send(i).AsTask()).ToArray();
        h.Backend.Release();
        using (var r = await first.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        foreach (var t in queued)
        {
            using var r = await t.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
        }
    }

    /// <summary>A listener on every instrument of <paramref name="factory"/>'s meters whose callback throws on each measurement.</summary>
    private static MeterListener ThrowingListener(IMeterFactory factory)
    {
        var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (ReferenceEquals(instrument.Meter.Scope, factory))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<double>((_, _, _, _) => throw new InvalidOperationException("listener boom"));
        listener.SetMeasurementEventCallback<long>((_, _, _, _) => throw new InvalidOperationException("listener boom"));
        listener.SetMeasurementEventCallback<int>((_, _, _, _) => throw new InvalidOperationException("listener boom"));
        listener.Start();
        return listener;
    }

    [Fact]
    public async Task A_meter_listener_that_throws_on_every_measurement_does_not_fail_or_lose_requests()
    {
        await using var h = TelemetryHarness.Create(o => o.Batching.MaxBatchSize = 4, model: "throwing-listener");
        using var listener = ThrowingListener(h.MeterFactory);

        await h.LoadAsync();

        // One alone (inline), then several behind a held instance (queued, batched).
        using (var r = await h.Send(1))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        await RobustnessTests.HeldAndQueuedRequestsSucceedAsync(h);
    }

    [Fact]
    public async Task A_meter_listener_attached_after_load_that_throws_does_not_fail_requests()
    {
        await using var h = TelemetryHarness.Create(model: "throwing-listener-late");
        await h.LoadAsync();
        using var listener = ThrowingListener(h.MeterFactory);

        using var r = await h.Send(1).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(r.IsSuccess, r.Message);
    }
}

/// <summary>An ActivityListener whose callbacks throw for the spans of this test's traces only.</summary>
[Collection(GlobalListeners.Name)]
public sealed class ThrowingActivityListenerTests
{
    private const string CallerName = "InferKit.Tests.ThrowingCaller";
    private static readonly ActivitySource CallerSource = new(CallerName);

    [Fact]
    public async Task An_activity_listener_that_throws_on_start_stop_and_exceptions_does_not_fail_requests()
    {
        var traces = new ConcurrentDictionary<ActivityTraceId, bool>();
        bool Mine(Activity a) => traces.ContainsKey(a.TraceId) || a.Links.Any(l => traces.ContainsKey(l.Context.TraceId));
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == InferKitTelemetry.Name || s.Name == CallerName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStarted = a =>
            {
                if (a.Source.Name != CallerName && Mine(a))
                {
                    throw new InvalidOperationException("started boom");
                }
            },
            ActivityStopped = a =>
            {
                if (a.Source.Name != CallerName && Mine(a))
                {
                    throw new InvalidOperationException("stopped boom");
                }
            },
            ExceptionRecorder = (a, _, ref _) =>
            {
                if (Mine(a))
                {
                    throw new InvalidOperationException("recorder boom");
                }
            },
        };
        ActivitySource.AddActivityListener(listener);

        await using var h = TelemetryHarness.Create(o => o.Batching.MaxBatchSize = 4, model: "throwing-tracer");
        await h.LoadAsync();
        using var caller = CallerSource.StartActivity("caller");
        Assert.NotNull(caller);
        traces[caller.TraceId] = true;

        using (var r = await h.Send(1).AsTask().WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        Assert.Same(caller, Activity.Current);
        await RobustnessTests.HeldAndQueuedRequestsSucceedAsync(h);

        h.Backend.Failure = () => new InvalidOperationException("backend boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(10).AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Same(caller, Activity.Current);
    }
}
