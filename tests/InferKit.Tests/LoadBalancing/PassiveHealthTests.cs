using InferKit.Models;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.LoadBalancing;

public sealed class PassiveHealthTests
{
    private static Task<Harness> CreateAsync(int instances = 2) => Harness.CreateAsync(o =>
    {
        o.LoadBalancing = "RoundRobin";
        o.Health.FailureThreshold = 2;
        o.Health.BackOff = TimeSpan.FromSeconds(10);
        o.Batching.AllowInlineExecution = true;
    }, instances: instances);

    [Fact]
    public async Task A_failing_instance_is_retried_elsewhere_then_taken_out_and_returns_after_its_back_off_and_a_good_run()
    {
        await using var h = await CreateAsync();
        h.Backends[0].Failure = () => new InvalidOperationException("boom");

        // Every request succeeds: batches that fail on instance 0 are retried once on instance 1.
        for (int i = 1; i <= 6; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("m/1/1", r.Instance);
            Assert.Equal(2f * i, r["y"].GetSpan<float>()[0]);
        }

        // Two failures took instance 0 out; it is not tried again during the back-off.
        var info = h.Registry.GetModel("m").Instances[0];
        Assert.NotNull(info.OutUntil);
        Assert.Equal(2, h.Backends[0].Runs);
        Assert.Equal(2, info.TotalFailures);

        // After the back-off a good run brings it back.
        h.Backends[0].Failure = null;
        h.Time.Advance(TimeSpan.FromSeconds(10));
        for (int i = 10; i < 14; i++)
        {
            (await h.Client.InferAsync("m", FakeBackend.Request(i))).Dispose();
        }

        Assert.True(h.Backends[0].Runs > 2);
        Assert.Null(h.Registry.GetModel("m").Instances[0].OutUntil);
    }

    [Fact]
    public async Task When_every_instance_is_out_requests_are_refused_at_once_with_a_retry_hint()
    {
        await using var h = await CreateAsync();
        foreach (var b in h.Backends)
        {
            b.Failure = () => new InvalidOperationException("down");
        }

        // Each failure is delivered as an exception naming the model and the instance.
        for (int i = 1; i <= 2; i++)
        {
            var ex = await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Client.InferAsync("m", FakeBackend.Request(i)));
            Assert.Equal("m", ex.Model);
            Assert.Contains("down", ex.Message, StringComparison.Ordinal);
        }

        Assert.All(h.Registry.GetModel("m").Instances, i => Assert.NotNull(i.OutUntil));
        var refused = h.Client.InferAsync("m", FakeBackend.Request(3));
        Assert.True(refused.IsCompleted);
        using var r = await refused;
        Assert.Equal(RefusalReason.NoHealthyInstance, r.RefusalReason);
        Assert.Equal(TimeSpan.FromSeconds(10), r.RetryAfter);
    }

    [Fact]
    public async Task A_batch_whose_instance_throws_is_answered_once_per_request_none_lost_none_twice()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Health.FailureThreshold = 100;
        }, instances: 1);
        var first = await h.OccupyAsync(100);
        h.Backend.Failure = () => new InvalidOperationException("mid-batch");
        var queued = Enumerable.Range(1, 6).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        h.Backend.Release();
        await Assert.ThrowsAsync<InferenceFailedException>(() => first);
        foreach (var t in queued)
        {
            await Assert.ThrowsAsync<InferenceFailedException>(() => t);
        }

        Assert.Equal(0, h.InternalRegistry.GetScheduler("m").Active);
        h.Backend.Failure = null;
        using var ok = await h.Client.InferAsync("m", FakeBackend.Request(9));
        Assert.True(ok.IsSuccess);
    }

    [Fact]
    public async Task A_slow_run_counts_against_the_instance_but_its_answered_batch_and_latency_are_still_recorded()
    {
        // Each batch takes 2 s against a RunTimeout of 1 s: answered, counted as a failure, and seen as slow by PeakEwma.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.LoadBalancing = "PeakEwma";
            o.Health.FailureThreshold = 100;
            o.Health.RunTimeout = TimeSpan.FromSeconds(1);
            o.Batching.AllowInlineExecution = true;
        }, computeTime: _ => TimeSpan.FromSeconds(2));

        for (int i = 1; i <= 2; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i));
            Assert.True(r.IsSuccess, r.Message);
        }

        var info = h.Registry.GetModel("m").Instances[0];
        Assert.Equal(2, info.ConsecutiveFailures);
        Assert.Equal(2, info.TotalFailures);
        Assert.Equal(2, info.Completed);
        Assert.Equal(TimeSpan.FromSeconds(2), info.SmoothedLatency);
        Assert.True(info.Weight < 1, $"learned weight {info.Weight} rows/s");
        Assert.Equal(0, info.Outstanding);
        Assert.Equal(0, info.OutstandingRows);
    }
}
