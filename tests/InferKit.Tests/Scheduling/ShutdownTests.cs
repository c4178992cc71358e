using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>Admission racing with a drain or a disposal of the model's scheduler.</summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task A_request_admitted_while_the_scheduler_is_disposed_is_refused_not_left_waiting()
    {
        // The admission checks (shutting down?) run without the scheduler's lock. A request that passed them just before
        // Dispose emptied the queue and stopped the timer must still be answered. It used to be queued after Dispose: with
        // a queue delay it waited for a timer that was never armed again, and its caller waited forever.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 4;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(10);
        });
        var scheduler = h.InternalRegistry.GetScheduler("m");
        scheduler.AfterAdmissionChecks = _ => scheduler.Dispose();

        var pending = h.Client.InferAsync("m", FakeBackend.Request(1)).AsTask();
        scheduler.AfterAdmissionChecks = null;
        h.Time.Advance(TimeSpan.FromSeconds(1)); // well past the queue delay
        using var r = await pending.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(InferenceStatus.Refused, r.Status);
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
        Assert.Empty(h.BatchIds());
        Assert.Equal(0, scheduler.Active);
        Assert.Equal(0, scheduler.QueueLength);
    }

    [Fact]
    public async Task A_request_that_passed_admission_as_a_drain_began_is_refused_rather_than_run_after_the_drain_completed()
    {
        // DrainAsync stops admission and completes once every admitted request is answered. A request that passed the
        // admission checks just before the drain began, and was not yet counted, used to run after the drain had already
        // reported every request answered.
        await using var h = await Harness.CreateAsync();
        var scheduler = h.InternalRegistry.GetScheduler("m");
        Task<bool>? drain = null;
        scheduler.AfterAdmissionChecks = _ => drain = scheduler.DrainAsync(TimeSpan.FromMinutes(1), CancellationToken.None);

        h.Backend.Hold();
        var pending = Task.Run(async () => await h.Client.InferAsync("m", FakeBackend.Request(1)));
        bool ran = await Task.WhenAny(h.Backend.Entered, pending) == h.Backend.Entered;
        Assert.NotNull(drain);
        bool drainedWhileRunning = ran && drain.IsCompleted;
        h.Backend.Release();
        using var r = await pending.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(await drain.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(drainedWhileRunning, "the drain reported every request answered while an admitted request was running");
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
        Assert.Empty(h.BatchIds());
        Assert.Equal(0, scheduler.Active);
    }
}
