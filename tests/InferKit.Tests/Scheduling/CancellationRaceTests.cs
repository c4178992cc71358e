using InferKit.Scheduling;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>Cancellation landing at the edges of a request's admission, where no lock orders it with the scheduler.</summary>
public sealed class CancellationRaceTests
{
    private static void AssertAnswer(InferenceResponse response, int id)
    {
        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(2f * id, response["y"].GetSpan<float>()[0]); // the fake model doubles its input
    }

    [Fact]
    public async Task A_request_cancelled_as_its_callback_is_registered_is_not_reused_while_its_queue_entry_remains()
    {
        // The token is cancelled after the admission checks and before the callback is registered: the callback then runs
        // synchronously inside the registration, which returns no registration to unregister. The request has been queued
        // by then; cancellation ends it and leaves its queue entry behind as a stale one, dropped when a batch next passes.
        // The request object used to go back to the pool anyway (nothing to unregister looked like nothing registered), so
        // the next request reused it while the stale entry still pointed at it: one object queued twice, in two lanes,
        // whose lane counts then drifted: the batch former chose a lane that only counted a phantom, found nothing, and spun
        // for good on a pool thread, and the request queued behind the stale entry (3 below) was never answered.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1);
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100);
        using var cts = new CancellationTokenSource();
        scheduler.AfterAdmissionChecks = r =>
        {
            if (r.Id == "1")
            {
                cts.Cancel();
            }
        };

        try
        {
            int pooled = scheduler.PooledRequests;
            var cancelled = h.Client.InferAsync("m", FakeBackend.Request(1, InferencePriority.High), cts.Token).AsTask();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(TimeSpan.FromSeconds(30)));
            scheduler.AfterAdmissionChecks = null;
            Assert.Equal(0, scheduler.QueueLength);
            Assert.Equal(pooled, scheduler.PooledRequests);

            // Requests behind it, in its lane and another, are all served, and the scheduler goes on serving.
            var second = h.Client.InferAsync("m", FakeBackend.Request(2, InferencePriority.Normal)).AsTask();
            var third = h.Client.InferAsync("m", FakeBackend.Request(3, InferencePriority.High)).AsTask();
            h.Backend.Release();
            (await first.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            using (var r2 = await second.WaitAsync(TimeSpan.FromSeconds(30)))
            {
                AssertAnswer(r2, 2);
            }

            using (var r3 = await third.WaitAsync(TimeSpan.FromSeconds(30)))
            {
                AssertAnswer(r3, 3);
            }
        }
        finally
        {
            h.Backend.Release(); // also when an assertion fails, so the harness can unload the model
        }

        using (var r4 = await Task.Run(() => h.Client.InferAsync("m", FakeBackend.Request(4, InferencePriority.High)).AsTask()).WaitAsync(TimeSpan.FromSeconds(30)))
        {
            AssertAnswer(r4, 4);
        }

        Assert.Equal(0, scheduler.QueueLength);
        Assert.Equal(0, scheduler.Active);
    }
}
