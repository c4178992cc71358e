using System.Diagnostics.Metrics;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using static InferKit.Telemetry.InferKitTelemetry.Instruments;

namespace InferKit.Tests.Telemetry;

public sealed class MetricsTests
{
    private static double[] Values(MetricCollector<double> collector, string? outcome = null) => collector.GetMeasurementSnapshot()
        .Where(m => outcome is null || Equals(m.Tags[InferKitTelemetry.OutcomeTag], outcome))
        .Select(m => m.Value).Order().ToArray();

    private static void AssertModelTags(IReadOnlyDictionary<string, object?> tags, string model = "m", string version = "1")
    {
        Assert.Equal(model, tags[InferKitTelemetry.ModelTag]);
        Assert.Equal(version, tags[InferKitTelemetry.VersionTag]);
    }

    [Fact]
    public async Task Ten_requests_in_three_batches_and_one_refusal_report_exactly_those_values_on_every_instrument()
    {
        // Batch A: request 1 alone (held at the gate). Queued behind it: requests 2..10 (the queue holds 9), which run as
        // batch B (2..6) and batch C (7..10). Request 11 finds the queue full. A batch of n rows computes for n × 10 ms.
        await using var h = TelemetryHarness.Create(o =>
        {
            o.Batching.MaxBatchSize = 5;
            o.Batching.MaxQueueLength = 9;
        }, computeTime: rows => TimeSpan.FromMilliseconds(10 * rows));
        using var requestDuration = h.Collect<double>(RequestDuration);
        using var queueDuration = h.Collect<double>(QueueDuration);
        using var computeDuration = h.Collect<double>(ComputeDuration);
        using var batchSize = h.Collect<int>(BatchSize);
        using var rejected = h.Collect<long>(Rejected);
        using var queueLength = h.Collect<long>(QueueLength);
        using var inflight = h.Collect<long>(InstanceInflight);
        using var instanceCount = h.Collect<long>(InstanceCount);
        using var loadDuration = h.Collect<double>(ModelLoadDuration);
        using var modelState = h.Collect<int>(ModelState);

        await h.LoadAsync();

        // Warm-up ran 1 row and 5 rows on the fake clock: 10 ms + 50 ms.
        var load = Assert.Single(loadDuration.GetMeasurementSnapshot());
        Assert.Equal(0.06, load.Value, 12);
        AssertModelTags(load.Tags);

        var first = await h.OccupyAsync(1);
        var queued = Enumerable.Range(2, 9).Select(i => h.Send(i).AsTask()).ToArray();
        using (var refused = await h.Send(11))
        {
            Assert.Equal(RefusalReason.QueueFull, refused.RefusalReason);
        }

        // While batch A holds the instance: 9 queued, 1 batch in flight on the one instance.
        queueLength.RecordObservableInstruments();
        var q = Assert.Single(queueLength.GetMeasurementSnapshot());
        Assert.Equal(9, q.Value);
        AssertModelTags(q.Tags);
        inflight.RecordObservableInstruments();
        var f = Assert.Single(inflight.GetMeasurementSnapshot());
        Assert.Equal(1, f.Value);
        Assert.Equal("m/1/0", f.Tags[InferKitTelemetry.InstanceTag]);

        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
        }

        Assert.Equal([[1f], [2f, 3f, 4f, 5f, 6f], [7f, 8f, 9f, 10f]], h.Backend.Batches.ToArray());

        // Request duration: A ends at 10 ms, B at 60 ms, C at 100 ms after admission; the refusal took no time.
        Assert.Equal(11, requestDuration.GetMeasurementSnapshot().Count);
        Assert.Equal([0.01, 0.06, 0.06, 0.06, 0.06, 0.06, 0.1, 0.1, 0.1, 0.1], Values(requestDuration, "success"));
        Assert.Equal([0.0], Values(requestDuration, "refused"));
        Assert.All(requestDuration.GetMeasurementSnapshot(), m => AssertModelTags(m.Tags));

        // Queue wait: A none, B waited for A, C for A and B.
        Assert.Equal([0.0, 0.01, 0.01, 0.01, 0.01, 0.01, 0.06, 0.06, 0.06, 0.06], Values(queueDuration));

        // Compute: 1, 5 and 4 rows; batch sizes.
        Assert.Equal([0.01, 0.04, 0.05], Values(computeDuration));
        Assert.All(computeDuration.GetMeasurementSnapshot(), m => Assert.Equal("m/1/0", m.Tags[InferKitTelemetry.InstanceTag]));
        // Sorted, as the other histograms above: a batch's measurements are recorded after its instance is released, so
        // the next batch, on another thread, may record first.
        Assert.Equal([1, 4, 5], batchSize.GetMeasurementSnapshot().Select(m => m.Value).Order().ToArray());

        var rejection = Assert.Single(rejected.GetMeasurementSnapshot());
        Assert.Equal(1, rejection.Value);
        Assert.Equal("queue_full", rejection.Tags[InferKitTelemetry.ReasonTag]);
        AssertModelTags(rejection.Tags);

        // Afterwards: nothing queued or in flight, one instance, the model ready.
        queueLength.Clear();
        queueLength.RecordObservableInstruments();
        Assert.Equal(0, Assert.Single(queueLength.GetMeasurementSnapshot()).Value);
        inflight.Clear();
        inflight.RecordObservableInstruments();
        Assert.Equal(0, Assert.Single(inflight.GetMeasurementSnapshot()).Value);
        instanceCount.RecordObservableInstruments();
        var count = Assert.Single(instanceCount.GetMeasurementSnapshot());
        Assert.Equal(1, count.Value);
        AssertModelTags(count.Tags);
        modelState.RecordObservableInstruments();
        var states = modelState.GetMeasurementSnapshot().ToDictionary(m => (string)m.Tags[InferKitTelemetry.StateTag]!, m => m.Value);
        Assert.Equal(
            new Dictionary<string, int> { ["not_loaded"] = 0, ["loading"] = 0, ["ready"] = 1, ["failed"] = 0, ["draining"] = 0, ["unloaded"] = 0 },
            states);
    }

    [Fact]
    public async Task Failed_batches_count_as_errors_expired_requests_as_deadline_exceeded_and_each_refusal_by_its_reason()
    {
        await using var h = TelemetryHarness.Create(o =>
        {
            o.Health.RetryOnAnotherInstance = false;
            o.Health.FailureThreshold = 100;
            o.Batching.MaxQueueLength = 1;
        });
        using var requestDuration = h.Collect<double>(RequestDuration);
        using var rejected = h.Collect<long>(Rejected);
        using var queueDuration = h.Collect<double>(QueueDuration);
        using var computeDuration = h.Collect<double>(ComputeDuration);
        await h.LoadAsync();

        h.Backend.Failure = () => new InvalidOperationException("boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        h.Backend.Failure = null;

        // One request waits (timeout 1 s) behind a held one; the queue (1) is then full; the waiting one expires.
        var first = await h.OccupyAsync(2);
        var waiting = h.Send(3, timeout: TimeSpan.FromSeconds(1)).AsTask();
        using (var full = await h.Send(4))
        {
            Assert.Equal(RefusalReason.QueueFull, full.RefusalReason);
        }

        h.Time.Advance(TimeSpan.FromSeconds(1));
        using (var expired = await waiting)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, expired.Status);
        }

        h.Backend.Release();
        (await first).Dispose();

        var outcomes = requestDuration.GetMeasurementSnapshot().Select(m => (string)m.Tags[InferKitTelemetry.OutcomeTag]!).Order().ToArray();
        Assert.Equal(["deadline_exceeded", "error", "refused", "success"], outcomes);
        Assert.Equal(1.0, Values(requestDuration, "deadline_exceeded").Single(), 12); // expired by the timer, 1 s after admission
        Assert.Equal("queue_full", Assert.Single(rejected.GetMeasurementSnapshot()).Tags[InferKitTelemetry.ReasonTag]);

        // The failed batch waited (0) like any other; its compute time is not recorded (only runs that produced outputs).
        Assert.Equal(2, queueDuration.GetMeasurementSnapshot().Count);
        Assert.Single(computeDuration.GetMeasurementSnapshot());
    }

    [Fact]
    public async Task A_model_that_fails_to_load_reports_state_failed_and_its_refused_requests_by_reason()
    {
        var sc = new ServiceCollection();
        sc.AddInferKit().AddModel("broken", _ => throw new InvalidOperationException("no weights"), o => o.Required = false);
        await using var sp = sc.BuildServiceProvider();
        var factory = sp.GetRequiredService<IMeterFactory>();
        using var state = new MetricCollector<int>(factory, InferKitTelemetry.Name, ModelState);
        using var rejected = new MetricCollector<long>(factory, InferKitTelemetry.Name, Rejected);
        using var requests = new MetricCollector<double>(factory, InferKitTelemetry.Name, RequestDuration);
        var client = sp.GetRequiredService<IInferenceClient>();

        using var response = await client.InferAsync("broken", FakeBackend.Request(1));
        Assert.Equal(RefusalReason.ModelNotReady, response.RefusalReason);

        state.RecordObservableInstruments();
        var failed = state.GetMeasurementSnapshot().Single(m => Equals(m.Tags[InferKitTelemetry.StateTag], "failed"));
        Assert.Equal(1, failed.Value);
        Assert.Equal("broken", failed.Tags[InferKitTelemetry.ModelTag]);
        Assert.Equal("model_not_ready", Assert.Single(rejected.GetMeasurementSnapshot()).Tags[InferKitTelemetry.ReasonTag]);
        Assert.Equal("refused", Assert.Single(requests.GetMeasurementSnapshot()).Tags[InferKitTelemetry.OutcomeTag]);
    }

    [Fact]
    public void Latency_histograms_advise_buckets_from_ten_microseconds_to_ten_seconds()
    {
        using var metrics = new InferKitMetrics(null);
        foreach (var histogram in new[] { metrics.RequestDuration, metrics.QueueDuration, metrics.ComputeDuration })
        {
            var buckets = histogram.Advice?.HistogramBucketBoundaries;
            Assert.NotNull(buckets);
            Assert.Equal(0.00001, buckets[0]);
            Assert.Equal(10, buckets[^1]);
            Assert.Equal(buckets.Order(), buckets);
            Assert.Equal("s", histogram.Unit);
        }
    }
}
