using InferKit.Models;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

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
    public async Task A_batch_whose_inputs_cannot_be_joined_fails_its_callers_and_leaves_its_instance_health_as_it_was()
    {
        // Joining the inputs fails before anything runs: not the instance's fault, and no run of it either. It used to be
        // recorded as a good run, which cleared the instance's consecutive failures (so a failing instance was never taken
        // out) and counted a run that never happened.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Health.FailureThreshold = 2;
            o.Health.BackOff = TimeSpan.FromSeconds(10);
        });
        var scheduler = h.InternalRegistry.GetScheduler("m");
        long completed = h.Registry.GetModel("m").Instances[0].Completed;

        // One failed run on the only instance, while three requests queue behind it.
        h.Backend.Failure = () => new InvalidOperationException("instance down");
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 3).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        scheduler.BeforeJoin = _ => throw new InvalidOperationException("join broke");
        h.Backend.Release();

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => first.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("instance down", ex.Message, StringComparison.Ordinal);
        foreach (var t in queued)
        {
            ex = await Assert.ThrowsAsync<InferenceFailedException>(() => t.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal("m", ex.Model);
            Assert.Contains("join broke", ex.Message, StringComparison.Ordinal);
        }

        // The batch that could not be joined never ran, and changed nothing of the instance but its reservation.
        Assert.Equal(1, h.Backend.Runs);
        var info = h.Registry.GetModel("m").Instances[0];
        Assert.Equal(1, info.ConsecutiveFailures);
        Assert.Equal(1, info.TotalFailures);
        Assert.Equal(completed, info.Completed);
        Assert.Null(info.OutUntil);
        Assert.Equal(0, info.Outstanding);
        Assert.Equal(0, info.OutstandingRows);
        Assert.Equal(0, scheduler.Active);

        // So the next failure is the second in a row, and takes the instance out.
        scheduler.BeforeJoin = null;
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Client.InferAsync("m", FakeBackend.Request(9)));
        Assert.NotNull(h.Registry.GetModel("m").Instances[0].OutUntil);
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

    [Fact]
    public async Task A_run_stuck_past_twice_RunTimeout_takes_its_instance_out_while_still_running_and_is_counted_once_when_it_returns()
    {
        // Two instances with two slots each: without a watchdog, instance 0's free slot would keep getting new batches
        // while its first run is stuck.
        var logs = new FakeLoggerProvider();
        await using var h = await Harness.CreateAsync(o =>
        {
            o.LoadBalancing = "RoundRobin";
            o.MaxConcurrencyPerInstance = 2;
            o.Health.FailureThreshold = 3;
            o.Health.BackOff = TimeSpan.FromSeconds(10);
            o.Health.RunTimeout = TimeSpan.FromSeconds(1);
            o.Health.RetryOnAnotherInstance = false;
            o.Batching.AllowInlineExecution = true;
        }, instances: 2, services: s => s.AddLogging(b => b.AddProvider(logs)));
        using var release = new GateOpener(h.Backends[0].Release);

        h.Backends[0].Hold();
        var held = Task.Run(async () => await h.Client.InferAsync("m", FakeBackend.Request(1)));
        await h.Backends[0].Entered.WaitAsync(TimeSpan.FromSeconds(30));

        // Past RunTimeout but not twice it: slow, not hung; judged when it returns, so still in rotation.
        h.Time.Advance(TimeSpan.FromSeconds(1.5));
        Assert.Null(h.Registry.GetModel("m").Instances[0].OutUntil);

        // Past twice RunTimeout while the run is still stuck: out of rotation, with a warning naming the model, the
        // instance and how long it has run.
        h.Time.Advance(TimeSpan.FromSeconds(1));
        var info = h.Registry.GetModel("m").Instances[0];
        Assert.NotNull(info.OutUntil);
        Assert.Equal(0, info.TotalFailures);
        var warning = Assert.Single(logs.Collector.GetSnapshot(), static r => r.Id.Id == 3004);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("'m'", warning.Message, StringComparison.Ordinal);
        Assert.Contains("m/1/0", warning.Message, StringComparison.Ordinal);
        Assert.Contains("00:00:02.5", warning.Message, StringComparison.Ordinal);

        // New work goes to instance 1 only.
        for (int i = 2; i <= 5; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("m/1/1", r.Instance);
        }

        Assert.Equal(1, h.Backends[0].Runs);

        // Released: the stuck request is still answered, and its run counts once (slow), without taking the instance out again.
        h.Backends[0].Release();
        using (var r = await held)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("m/1/0", r.Instance);
        }

        info = h.Registry.GetModel("m").Instances[0];
        Assert.Equal(1, info.TotalFailures);
        Assert.Equal(0, info.ConsecutiveFailures);
        Assert.Equal(0, info.Outstanding);
        Assert.Single(logs.Collector.GetSnapshot(), static r => r.Id.Id is 3004 or 3001);

        // After its back-off it comes back through the normal path: a good run restores it, and no stale watchdog entry takes it out again.
        h.Time.Advance(TimeSpan.FromSeconds(10));
        for (int i = 10; i < 14; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i));
            Assert.True(r.IsSuccess, r.Message);
        }

        h.Time.Advance(TimeSpan.FromSeconds(5));
        Assert.True(h.Backends[0].Runs > 1);
        Assert.Null(h.Registry.GetModel("m").Instances[0].OutUntil);
    }
}
