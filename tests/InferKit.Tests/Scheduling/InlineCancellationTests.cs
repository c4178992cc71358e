using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// A lone caller with an idle instance runs its request inline, on its own thread, with no cancellation callback
/// registered: its token must reach the run (the backend stops it), and a cancel that lands while the run goes on must
/// answer the caller as cancelled, as it does for a queued request cancelled while its batch runs.
/// </summary>
public sealed class InlineCancellationTests
{
    private const string CancelledMessage = "The request to model 'm' was cancelled.";

    private static Task<Harness> CreateAsync() => Harness.CreateAsync(o =>
    {
        o.Batching.AllowInlineExecution = true;

        // One failure would take the only instance out: a cancelled run must not count as one.
        o.Health.FailureThreshold = 1;
        o.Health.BackOff = TimeSpan.FromSeconds(10);
    });

    [Fact]
    public async Task A_cancel_during_an_inline_run_stops_the_run_and_cancels_the_caller_leaving_the_instance_as_it_was()
    {
        await using var h = await CreateAsync();
        var scheduler = h.InternalRegistry.GetScheduler("m");

        // A first request leaves its request object in the pool, for the cancelled one to take and give back.
        (await h.Client.InferAsync("m", FakeBackend.Request(3))).Dispose();
        h.Backend.ThreadIds.Clear();
        long completed = h.Registry.GetModel("m").Instances[0].Completed;
        int pooled = scheduler.PooledRequests;
        Assert.Equal(1, pooled);
        using var cts = new CancellationTokenSource();
        int callerThread = 0;
        h.Backend.Hold(); // the run waits at the gate on the token it was given
        var call = Task.Run(async () =>
        {
            callerThread = Environment.CurrentManagedThreadId;
            return await h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token);
        });

        try
        {
            await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(callerThread, Assert.Single(h.Backend.ThreadIds)); // inline: the caller's own thread runs it

            cts.Cancel();

            // Without the token the run waited at the gate until released, and the caller with it.
            var ex = await Assert.ThrowsAsync<OperationCanceledException>(() => call.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(cts.Token, ex.CancellationToken);
            Assert.Equal(CancelledMessage, ex.Message);
        }
        finally
        {
            h.Backend.Release(); // also when an assertion fails, so the harness can unload the model
        }

        // Released without an outcome: no failure (which would have taken the only instance out), no completed run.
        var info = h.Registry.GetModel("m").Instances[0];
        Assert.Equal(0, info.Outstanding);
        Assert.Equal(0, info.OutstandingRows);
        Assert.Equal(0, info.TotalFailures);
        Assert.Equal(0, info.ConsecutiveFailures);
        Assert.Null(info.OutUntil);
        Assert.Equal(completed, info.Completed);
        Assert.Equal(0, scheduler.Active);
        Assert.Equal(pooled, scheduler.PooledRequests);

        using var next = await h.Client.InferAsync("m", FakeBackend.Request(2));
        Assert.True(next.IsSuccess, next.Message);
        Assert.Equal(4f, next["y"].GetSpan<float>()[0]);
    }

    [Fact]
    public async Task A_cancel_that_lands_while_an_inline_run_finishes_anyway_cancels_the_caller()
    {
        // The backend sees the cancel too late to stop (as ONNX Runtime does once its outputs are written): the run
        // succeeds and counts for its instance, but its caller, who cancelled during it, is answered as cancelled.
        await using var h = await CreateAsync();
        var scheduler = h.InternalRegistry.GetScheduler("m");
        long completed = h.Registry.GetModel("m").Instances[0].Completed;
        using var cts = new CancellationTokenSource();
        h.Backend.Failure = () =>
        {
            cts.Cancel();
            return null;
        };

        var call = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token);

        Assert.True(call.IsCompleted); // inline: answered before InferAsync returned
        Assert.Equal(Environment.CurrentManagedThreadId, Assert.Single(h.Backend.ThreadIds));
        Assert.True(call.IsCanceled);
        var ex = await Assert.ThrowsAsync<OperationCanceledException>(() => call.AsTask());
        Assert.Equal(cts.Token, ex.CancellationToken);
        Assert.Equal(CancelledMessage, ex.Message);
        var info = h.Registry.GetModel("m").Instances[0];
        Assert.Equal(0, info.Outstanding);
        Assert.Equal(0, info.OutstandingRows);
        Assert.Equal(0, info.TotalFailures);
        Assert.Equal(completed + 1, info.Completed);
        Assert.Equal(0, scheduler.Active);

        h.Backend.Failure = null;
        using var next = await h.Client.InferAsync("m", FakeBackend.Request(2));
        Assert.True(next.IsSuccess, next.Message);
    }

    [Fact]
    public async Task A_caller_cancelled_during_an_inline_run_sees_what_a_caller_cancelled_while_queued_or_running_from_the_queue_sees()
    {
        // Queued: no inline run; the first request runs (held at the gate), the second waits behind it.
        Outcome waiting;
        Outcome runningQueued;
        await using (var h = await Harness.CreateAsync(o => o.Batching.AllowInlineExecution = false))
        {
            using var runningCts = new CancellationTokenSource();
            using var waitingCts = new CancellationTokenSource();
            h.Backend.Hold();
            try
            {
                var running = h.Client.InferAsync("m", FakeBackend.Request(1), runningCts.Token);
                await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
                var queued = h.Client.InferAsync("m", FakeBackend.Request(2), waitingCts.Token);
                waitingCts.Cancel();
                waiting = await ObserveAsync(queued, waitingCts.Token);
                runningCts.Cancel();
                runningQueued = await ObserveAsync(running, runningCts.Token);
            }
            finally
            {
                h.Backend.Release();
            }
        }

        // Inline: the request runs on the caller's thread, which InferAsync returns to only after the run.
        Outcome inline;
        await using (var h = await CreateAsync())
        {
            using var cts = new CancellationTokenSource();
            int callerThread = 0;
            h.Backend.Hold();
            try
            {
                var call = Task.Run(() =>
                {
                    callerThread = Environment.CurrentManagedThreadId;
                    return h.Client.InferAsync("m", FakeBackend.Request(3), cts.Token);
                });
                await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
                cts.Cancel();
                inline = await ObserveAsync(await call.WaitAsync(TimeSpan.FromSeconds(30)), cts.Token);
            }
            finally
            {
                h.Backend.Release();
            }

            Assert.Equal(callerThread, Assert.Single(h.Backend.ThreadIds)); // it did run inline
        }

        var expected = new Outcome(true, typeof(OperationCanceledException), CancelledMessage, true);
        Assert.Equal(expected, waiting);
        Assert.Equal(expected, runningQueued);
        Assert.Equal(expected, inline);
    }

    /// <summary>What a caller observes of a call its token ended: the task's state, then the exception it catches.</summary>
    private static async Task<Outcome> ObserveAsync(ValueTask<InferenceResponse> call, CancellationToken token)
    {
        var task = call.AsTask();
        await Task.WhenAny(task).WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);
        return new Outcome(task.IsCanceled, ex.GetType(), ex.Message, ex.CancellationToken == token);
    }

    private readonly record struct Outcome(bool IsCanceled, Type Type, string Message, bool CarriesCallerToken);
}
