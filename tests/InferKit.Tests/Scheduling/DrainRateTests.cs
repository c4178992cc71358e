using InferKit.Scheduling;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// The drain rate: rows per second a backlog is really answered at, measured under load, and admission judging
/// deadlines by it when it is slower than back-to-back batches.
/// </summary>
public class DrainRateTests
{
    private const long Frequency = 1_000_000; // timestamp ticks per second: one tick is a microsecond
    private const long Window = 20_000; // 20 ms

    [Fact]
    public void A_window_counts_the_rows_completed_after_its_first_batch_and_only_while_work_stayed_queued()
    {
        var model = new DrainRateModel(Window, Frequency);
        Assert.Equal(0, model.RowsPerSecond);

        // 10 rows every 5 ms with work queued: 40 rows in the 20 ms after the first completion = 2,000 rows/s.
        long t = 1_000;
        for (int i = 0; i <= 4; i++, t += 5_000)
        {
            model.Record(10, t, backlogged: true);
        }

        Assert.Equal(2_000, model.RowsPerSecond, 6);

        // A window in which one batch left the queue empty measures idle time, not the drain: it is not counted.
        for (int i = 1; i <= 4; i++, t += 5_000)
        {
            model.Record(1, t, backlogged: i != 2);
        }

        Assert.Equal(2_000, model.RowsPerSecond, 6);
    }

    [Fact]
    public void The_rate_is_a_cautious_one_the_mean_less_twice_the_deviation_but_at_least_a_quarter_of_the_mean()
    {
        var model = new DrainRateModel(Window, Frequency);
        long t = 1_000;
        model.Record(0, t, backlogged: true);

        // Alternating windows of 2,000 and 1,000 rows/s.
        for (int w = 0; w < 40; w++)
        {
            t += Window;
            model.Record(w % 2 == 0 ? 40 : 20, t, backlogged: true);
        }

        double rate = model.RowsPerSecond;
        Assert.InRange(rate, 250, 1_000); // no faster than the slow windows, at least a quarter of the mean (1,000 to 2,000)

        // Steady windows bring it back towards their rate.
        for (int w = 0; w < 60; w++)
        {
            t += Window;
            model.Record(40, t, backlogged: true);
        }

        Assert.InRange(model.RowsPerSecond, 1_900, 2_000);
    }

    [Fact]
    public async Task Admission_refuses_a_deadline_the_measured_drain_cannot_meet_though_back_to_back_batches_could()
    {
        // Batches of 1 row take 1 ms of fake time (warm-up measures it): five requests ahead would be done in about
        // 6 ms back to back. But the backlog has been measured draining at 100 rows/s: they need about 50 ms.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(1));
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100);
        var ahead = Enumerable.Range(1, 5).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();

        var admitted = h.Client.InferAsync("m", FakeBackend.Request(8, timeout: TimeSpan.FromMilliseconds(30))).AsTask();
        Assert.False(admitted.IsCompleted, "queued while only the batch latency is known");
        Assert.True(scheduler.PredictLatency(InferencePriority.Normal, 1) < 0.02);

        // A backlog window of 20 ms in which 2 rows were answered: 100 rows/s (less, if a window was already open).
        long now = h.Time.GetTimestamp();
        long window = (long)(ModelScheduler.DrainWindowSeconds * h.Time.TimestampFrequency);
        scheduler.Drain.Record(1, now, backlogged: true);
        scheduler.Drain.Record(2, now + window, backlogged: true);
        Assert.InRange(scheduler.Drain.RowsPerSecond, 1, 100);
        Assert.True(scheduler.PredictLatency(InferencePriority.Normal, 1) >= 0.06); // 7 rows queued at 100 rows/s at most

        using (var refused = await h.Client.InferAsync("m", FakeBackend.Request(9, timeout: TimeSpan.FromMilliseconds(30))))
        {
            Assert.Equal(InferenceStatus.Refused, refused.Status);
            Assert.Equal(RefusalReason.DeadlineInfeasible, refused.RefusalReason);
        }

        h.Backend.Release();
        foreach (var t in ahead.Append(first).Append(admitted))
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
        }
    }
    [Fact]
    public async Task A_drain_rate_measured_under_an_old_backlog_does_not_refuse_requests_when_nothing_is_queued()
    {
        // Batches of 1 row take 1 ms of fake time. A backlog once drained at 10 rows/s (a slow spell); the model is idle
        // now. The drain rate bounds how long the queue ahead takes: with nothing ahead and an instance free, a request's
        // wait is its own batch, so a request with 50 ms to spare is admitted, every time, not only as a probe.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(1));
        var scheduler = h.InternalRegistry.GetScheduler("m");
        long now = h.Time.GetTimestamp();
        long window = (long)(ModelScheduler.DrainWindowSeconds * h.Time.TimestampFrequency);
        scheduler.Drain.Record(1, now, backlogged: true);
        scheduler.Drain.Record(1, now + (window * 5), backlogged: true);
        Assert.InRange(scheduler.Drain.RowsPerSecond, 9, 11);

        for (int i = 1; i <= 5; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i, timeout: TimeSpan.FromMilliseconds(50)));
            Assert.True(r.IsSuccess, $"request {i}: {r.Status} {r.RefusalReason} {r.Message}");
        }
    }
    [Fact]
    public async Task Requests_waiting_for_a_batch_to_fill_are_no_backlog_to_measure_the_drain_by()
    {
        // MaxQueueDelay 100 ms, batches of 1 row taking 1 ms. Each batch completes with the next request queued, but
        // that request waits for its batch to fill, by choice: the windows between completions measure the queue
        // delay (1 row per 100 ms), not how fast a backlog drains. Counted, they set the drain rate to 10 rows/s, and
        // admission then refused requests behind a queued one that the model answers within their deadline.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 4;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(100);
        }, computeTime: _ => TimeSpan.FromMilliseconds(1));
        var scheduler = h.InternalRegistry.GetScheduler("m");

        var answered = new List<Task<InferenceResponse>>();
        var waiting = h.Client.InferAsync("m", FakeBackend.Request(1)).AsTask();
        for (int i = 2; i <= 4; i++)
        {
            h.Backend.Hold();
            h.Time.Advance(TimeSpan.FromMilliseconds(100)); // the waiting request's batch starts, and is held
            await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
            var next = h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask(); // queued behind it, to wait for a batch
            h.Backend.Release();
            using (var r = await waiting)
            {
                Assert.True(r.IsSuccess, r.Message);
            }

            waiting = next;
        }

        Assert.Equal(0, scheduler.Drain.RowsPerSecond);

        // One request queued (waiting to fill its batch); another with 60 ms to spare is admitted, not refused as
        // infeasible, and both run 57 ms later (its deadline less the delivery margin and the batch's 1 ms).
        var late = h.Client.InferAsync("m", FakeBackend.Request(10, timeout: TimeSpan.FromMilliseconds(60))).AsTask();
        if (late.IsCompleted)
        {
            using var early = await late;
            Assert.Fail($"answered at admission: {early.Status} {early.RefusalReason} {early.Message}");
        }

        h.Backend.Hold();
        h.Time.Advance(TimeSpan.FromMilliseconds(57));
        await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        h.Backend.Release();
        foreach (var t in new[] { waiting, late })
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
        }
    }
}
