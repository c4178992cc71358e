using InferKit.LoadBalancing;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using InferKit.Tests.Telemetry;

namespace InferKit.Tests.Scheduling;

/// <summary>The runner thread that takes over while full batches are queued, and answers that reach their caller late.</summary>
public sealed class BacklogTests
{
    private const string RunnerPrefix = "InferKit runner m:";

    /// <summary>Sends request <paramref name="id"/> from a thread named "test-caller", waits for it and checks the answer.</summary>
    private static void InferOnCallerThread(Harness h, int id)
    {
        InferenceResponse? answer = null;
        var caller = new Thread(() => answer = h.Client.InferAsync("m", FakeBackend.Request(id)).AsTask().GetAwaiter().GetResult())
        {
            Name = "test-caller",
        };
        caller.Start();
        Assert.True(caller.Join(TimeSpan.FromSeconds(30)));
        using (answer)
        {
            Assert.NotNull(answer);
            Assert.True(answer.IsSuccess, answer.Message);
            Assert.Equal(2f * id, answer["y"].GetSpan<float>()[0]);
        }
    }

    /// <summary>
    /// Holds the single instance with request 100, queues requests 1..<paramref name="count"/> behind it, lets it go,
    /// and checks that every caller got its own rows. Returns the queued requests' responses (already disposed).
    /// </summary>
    private static async Task<InferenceResponse[]> QueueBehindBusyInstanceAsync(Harness h, int count)
    {
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, count).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        h.Backend.Release();
        (await first).Dispose();
        var answers = new InferenceResponse[count];
        for (int i = 0; i < count; i++)
        {
            using var r = await queued[i];
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(2f * (i + 1), r["y"].GetSpan<float>()[0]);
            answers[i] = r;
        }

        return answers;
    }

    [Fact]
    public async Task A_backlog_of_full_batches_runs_back_to_back_on_the_runner_thread()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 4);
        var answers = await QueueBehindBusyInstanceAsync(h, 12);
        Assert.All(answers, r => Assert.Equal(4, r.BatchSize));

        var batches = h.BatchIds();
        Assert.Equal([[100f], [1f, 2f, 3f, 4f], [5f, 6f, 7f, 8f], [9f, 10f, 11f, 12f]], batches);
        // The first batch ran on the occupying caller's thread. A pool work item queued while the queue was still short
        // may take one batch when it finally runs (it hands off after one); the rest of the backlog is the runner's.
        var threads = h.Backend.Threads.ToArray();
        Assert.DoesNotContain(RunnerPrefix, threads[0] ?? string.Empty, StringComparison.Ordinal);
        Assert.InRange(threads.Skip(1).Count(t => t?.StartsWith(RunnerPrefix, StringComparison.Ordinal) == true), 2, 3);
    }

    [Fact]
    public async Task Less_than_a_full_batch_queued_is_left_to_the_thread_pool()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        await QueueBehindBusyInstanceAsync(h, 5);
        Assert.Null(h.InternalRegistry.GetScheduler("m").RunnerThread);
        Assert.All(h.Backend.Threads, t => Assert.DoesNotContain(RunnerPrefix, t ?? string.Empty, StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_runner_thread_ends_when_the_model_is_disposed()
    {
        Thread? runner;
        await using (var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 2))
        {
            await QueueBehindBusyInstanceAsync(h, 4);
            runner = h.InternalRegistry.GetScheduler("m").RunnerThread;
            Assert.NotNull(runner);
            Assert.True(runner.IsAlive);
        }

        Assert.True(runner.Join(TimeSpan.FromSeconds(30)), "the runner thread is still alive 30 s after disposal");
    }

    [Fact]
    public async Task The_runner_waits_rather_than_spins_while_the_strategy_waits_for_a_busy_instance()
    {
        // Weighted least connections may choose a busy fast instance over an idle slow one: the batch waits for it.
        // While it waits with full batches queued, the runner has nothing to do until that instance frees up (its
        // completion hands off again). The runner must then block, not spin re-checking that the idle instance has room:
        // it used to loop forever on a CPU core, calling the strategy millions of times.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 2;
            o.LoadBalancing = LoadBalancingStrategies.WeightedLeastConnections;
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 100 });
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 1 });
        }, instances: 2);
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100); // on instance 0, the fast one, and held there
        var queued = Enumerable.Range(1, 4).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        Assert.True(SpinWait.SpinUntil(() => scheduler.RunnerThread is not null, TimeSpan.FromSeconds(30)), "the backlog never woke the runner");
        var runner = scheduler.RunnerThread!;
        bool blocked = SpinWait.SpinUntil(() => (runner.ThreadState & ThreadState.WaitSleepJoin) != 0, TimeSpan.FromSeconds(10));
        int runsWhileHeld = h.Backends[1].Runs;

        h.Backend.Release();
        (await first).Dispose();
        for (int i = 0; i < queued.Length; i++)
        {
            using var r = await queued[i];
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(2f * (i + 1), r["y"].GetSpan<float>()[0]);
        }

        Assert.True(blocked, $"the runner thread is still running (state {runner.ThreadState}) 10 s after the backlog queued behind a busy instance");
        Assert.Equal(0, runsWhileHeld); // the strategy's choice stood: nothing ran on the slow instance meanwhile
        Assert.Equal(0, scheduler.Active);
    }

    [Fact]
    public async Task Many_callers_over_two_instances_with_backlogs_each_get_exactly_their_own_rows_once()
    {
        // A small batch cap against 48 callers keeps full batches queued, so the runner and pool workers both run batches.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 4, instances: 2);
        const int callers = 48;
        const int perCaller = 30;
        var tasks = Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < perCaller; i++)
            {
                int id = 1 + (c * perCaller) + i;
                using var r = await h.Client.InferAsync("m", FakeBackend.Request(id));
                Assert.True(r.IsSuccess, r.Message);
                Assert.Equal(2f * id, r["y"].GetSpan<float>()[0]);
            }
        })).ToArray();
        await Task.WhenAll(tasks);

        var ids = h.Backends.SelectMany(static b => b.Batches).SelectMany(static b => b).ToArray();
        Assert.Equal(callers * perCaller, ids.Length);
        Assert.Equal(callers * perCaller, ids.Distinct().Count());
        Assert.All(h.Backends.SelectMany(static b => b.Batches), b => Assert.InRange(b.Length, 1, 4));
        Assert.Equal(0, h.InternalRegistry.GetScheduler("m").Active);
    }

    [Fact]
    public async Task A_result_that_reaches_its_caller_after_the_deadline_is_answered_DeadlineExceeded_and_counted()
    {
        await using var h = TelemetryHarness.Create(o =>
        {
            o.Batching.RefuseInfeasibleDeadlines = false;
            o.Batching.DeliveryMargin = TimeSpan.Zero;
        });
        using var discarded = h.Collect<long>(InferKitTelemetry.Instruments.DiscardedLate);
        using var durations = h.Collect<double>(InferKitTelemetry.Instruments.RequestDuration);
        await h.LoadAsync();

        // Both results are ready at fake time 0, well inside the 20 ms; neither caller has read its result yet.
        var (late, onTime) = await TwoResultsReadyUnreadAsync(h);
        using (var r = await onTime)
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        // The other caller reads its result only after the deadline passed: it must not see a late success.
        h.Time.Advance(TimeSpan.FromMilliseconds(25));
        using (var r = await late)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.Contains("reached the caller 5.0 ms after it", r.Message, StringComparison.Ordinal);
            Assert.Throws<InvalidOperationException>(() => r["y"]);
        }

        var m = Assert.Single(discarded.GetMeasurementSnapshot());
        Assert.Equal(1, m.Value);
        Assert.Equal("m", m.Tags[InferKitTelemetry.ModelTag]);

        // The metrics say what each caller got: the request that held the instance and the one read in time succeeded (at
        // their batches' end, fake time 0, 0 s after admission); the other is a deadline miss lasting until its late read,
        // 25 ms after admission, not a third success.
        var outcomes = durations.GetMeasurementSnapshot().Select(static d => ((string)d.Tags[InferKitTelemetry.OutcomeTag]!, d.Value)).OrderBy(static o => o.Item1).ToArray();
        Assert.Equal([("deadline_exceeded", 0.025), ("success", 0.0), ("success", 0.0)], outcomes);
    }

    [Fact]
    public async Task A_success_read_inside_the_read_margin_before_the_deadline_is_not_delivered()
    {
        // Default DeliveryMargin (2 ms): the read margin is 20 µs. Results are ready at fake time 0; the 20 ms deadline
        // is then 30 µs away for one reader and 10 µs away for the other.
        await using var h = TelemetryHarness.Create(o => o.Batching.RefuseInfeasibleDeadlines = false);
        await h.LoadAsync();

        var (early, close) = await TwoResultsReadyUnreadAsync(h);
        h.Time.Advance(TimeSpan.FromMilliseconds(20) - TimeSpan.FromMicroseconds(30));
        using (var r = await early)
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        h.Time.Advance(TimeSpan.FromMicroseconds(20));
        using (var r = await close)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.Contains("only 10 µs before it (inside the read margin)", r.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// Requests 5 and 6, each with a 20 ms timeout, queued behind a running request and completed together at fake time
    /// 0; neither caller has read its result yet.
    /// </summary>
    private static async Task<(ValueTask<InferenceResponse> Five, ValueTask<InferenceResponse> Six)> TwoResultsReadyUnreadAsync(TelemetryHarness h)
    {
        var first = await h.OccupyAsync(100);
        var five = h.Send(5, timeout: TimeSpan.FromMilliseconds(20));
        var six = h.Send(6, timeout: TimeSpan.FromMilliseconds(20));
        h.Backend.Release();
        (await first).Dispose();
        Assert.True(SpinWait.SpinUntil(() => five.IsCompleted && six.IsCompleted, TimeSpan.FromSeconds(30)));
        return (five, six);
    }

    [Fact]
    public async Task With_another_request_in_flight_a_caller_does_not_run_its_request_alone_on_its_own_thread()
    {
        // Instance 0 is busy with request 100; instance 1 is idle. A caller arriving now has company: its request must
        // queue (so it can share a batch with the next arrivals) rather than run alone, inline, on the caller's thread.
        await using var h = await Harness.CreateAsync(instances: 2);
        foreach (var b in h.Backends)
        {
            b.Hold();
        }

        var first = Task.Run(async () => await h.Client.InferAsync("m", FakeBackend.Request(100)));
        await Task.WhenAny(h.Backends.Select(static b => b.Entered)).WaitAsync(TimeSpan.FromSeconds(30));
        var busy = h.Backends.Single(static b => b.Entered.IsCompleted);
        foreach (var b in h.Backends.Where(b => b != busy))
        {
            b.Release();
        }

        InferOnCallerThread(h, 1);

        busy.Release();
        (await first).Dispose();
        var runs = h.Backends.SelectMany(static b => b.Batches.Zip(b.Threads)).Where(static r => r.First.Contains(1f)).ToArray();
        var run = Assert.Single(runs);
        Assert.NotEqual("test-caller", run.Second);
    }

    [Fact]
    public async Task A_lone_caller_runs_inline_on_its_own_thread()
    {
        await using var h = await Harness.CreateAsync(instances: 2);
        InferOnCallerThread(h, 1);

        Assert.Equal("test-caller", Assert.Single(h.Backends.SelectMany(static b => b.Threads)));
    }
}
