using InferKit.Scheduling;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

public sealed class BatchingTests
{
    private static ValueTask<InferenceResponse> Send(Harness h, int id, InferencePriority priority = InferencePriority.Normal, TimeSpan? timeout = null, int rows = 1)
        => h.Client.InferAsync("m", FakeBackend.Request(id, priority, timeout, rows));

    private static void AssertAnswer(InferenceResponse response, int id, int rows = 1)
    {
        Assert.True(response.IsSuccess, response.Message);
        var y = response["y"].GetSpan<float>();
        Assert.Equal(rows * 2, y.Length);
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(2f * id, y[r * 2]);
            Assert.Equal(2f * r, y[(r * 2) + 1]);
        }
    }

    [Fact]
    public async Task Queued_requests_join_one_batch_and_each_caller_gets_its_own_rows()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 5).Select(i => Send(h, i).AsTask()).ToArray();
        Assert.All(queued, t => Assert.False(t.IsCompleted));

        h.Backend.Release();
        using (var r = await first)
        {
            AssertAnswer(r, 100);
        }

        for (int i = 0; i < queued.Length; i++)
        {
            using var r = await queued[i];
            AssertAnswer(r, i + 1);
            Assert.Equal(5, r.BatchSize);
        }

        var batches = h.BatchIds();
        Assert.Equal(2, batches.Count);
        Assert.Equal([100f], batches[0]);
        Assert.Equal([1f, 2f, 3f, 4f, 5f], batches[1]);
    }

    [Fact]
    public async Task Batches_are_capped_at_MaxBatchSize_and_multi_row_requests_are_never_split()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 4);
        var first = await h.OccupyAsync();
        var a = Send(h, 1, rows: 3).AsTask();
        var b = Send(h, 2, rows: 2).AsTask();
        var c = Send(h, 3, rows: 1).AsTask();
        h.Backend.Release();
        (await first).Dispose();
        using (var r = await a)
        {
            AssertAnswer(r, 1, 3);
        }

        using (var r = await b)
        {
            AssertAnswer(r, 2, 2);
        }

        using (var r = await c)
        {
            AssertAnswer(r, 3, 1);
        }

        var batches = h.BatchIds().Skip(1).ToList();
        Assert.Equal([1f, 1f, 1f], batches[0]);
        Assert.Equal([2f, 2f, 3f], batches[1]);
    }

    [Fact]
    public async Task Preferred_batch_sizes_cut_a_batch_to_the_largest_preferred_size_queued()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Batching.PreferredBatchSizes.Add(4);
        });
        var first = await h.OccupyAsync();
        var queued = Enumerable.Range(1, 6).Select(i => Send(h, i).AsTask()).ToArray();
        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            (await t).Dispose();
        }

        var sizes = h.BatchIds().Skip(1).Select(static b => b.Length).ToList();
        Assert.Equal([4, 2], sizes);
    }

    [Fact]
    public async Task Preferred_batch_sizes_do_not_cut_a_batch_to_a_size_that_is_not_preferred()
    {
        // Requests of 2 and 3 rows: no run of them makes 4 rows. Cutting the 5 rows towards 4 left 2 rows, neither a
        // preferred size nor what was queued; the batch runs as formed instead.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Batching.PreferredBatchSizes.Add(4);
        });
        var first = await h.OccupyAsync();
        var queued = new[] { Send(h, 1, rows: 2).AsTask(), Send(h, 2, rows: 3).AsTask() };
        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            (await t).Dispose();
        }

        Assert.Equal([1f, 1f, 2f, 2f, 2f], Assert.Single(h.BatchIds().Skip(1)));
    }

    [Fact]
    public async Task Preferred_batch_sizes_cut_a_batch_of_multi_row_requests_where_its_requests_make_a_preferred_size()
    {
        // Requests of 1, 3 and 2 rows: the first two make 4 rows, the preferred size.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Batching.PreferredBatchSizes.Add(4);
        });
        var first = await h.OccupyAsync();
        var queued = new[] { Send(h, 1, rows: 1).AsTask(), Send(h, 2, rows: 3).AsTask(), Send(h, 3, rows: 2).AsTask() };
        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            (await t).Dispose();
        }

        var batches = h.BatchIds().Skip(1).ToList();
        Assert.Equal([1f, 2f, 2f, 2f], batches[0]);
        Assert.Equal([3f, 3f], batches[1]);
    }

    [Fact]
    public async Task MaxQueueDelay_does_not_wait_for_more_requests_past_a_queued_requests_deadline()
    {
        // The model waits up to 100 ms for a batch to fill, but the request queued has 50 ms: waiting the whole delay
        // would let it expire unrun on an idle model. It runs once its deadline, less the delivery margin and its
        // batch's measured latency (1 ms), is near, and is answered.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 4;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(100);
        }, computeTime: _ => TimeSpan.FromMilliseconds(1));
        var a = Send(h, 1, timeout: TimeSpan.FromMilliseconds(50)).AsTask();
        Assert.Empty(h.BatchIds());

        // It runs at 47 ms: its deadline less the delivery margin (2 ms) and the batch's latency. Before, it would have
        // waited until 100 ms, long after its deadline (then the run never starts and this wait gives up).
        h.Backend.Hold();
        h.Time.Advance(TimeSpan.FromMilliseconds(40));
        Assert.Empty(h.BatchIds());
        h.Time.Advance(TimeSpan.FromMilliseconds(7));
        await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        h.Backend.Release();

        using var r = await a;
        Assert.True(r.IsSuccess, $"{r.Status} {r.RefusalReason} {r.Message}");
        AssertAnswer(r, 1);
    }

    [Fact]
    public async Task MaxQueueDelay_waits_for_more_requests_until_the_delay_passes()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 4;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(50);
        });
        var a = Send(h, 1).AsTask();
        var b = Send(h, 2).AsTask();
        Assert.Empty(h.BatchIds());
        Assert.False(a.IsCompleted);

        h.Time.Advance(TimeSpan.FromMilliseconds(49));
        Assert.Empty(h.BatchIds());

        h.Time.Advance(TimeSpan.FromMilliseconds(1));
        using (var r = await a)
        {
            AssertAnswer(r, 1);
        }

        (await b).Dispose();
        Assert.Equal([1f, 2f], Assert.Single(h.BatchIds()));
    }

    [Fact]
    public async Task MaxQueueDelay_dispatches_at_once_when_a_full_batch_is_queued()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 3;
            o.Batching.MaxQueueDelay = TimeSpan.FromSeconds(10);
        });
        var tasks = Enumerable.Range(1, 3).Select(i => Send(h, i).AsTask()).ToArray();
        foreach (var t in tasks)
        {
            (await t).Dispose();
        }

        Assert.Equal([1f, 2f, 3f], Assert.Single(h.BatchIds()));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_request_that_allows_a_synchronous_continuation_resumes_on_the_batch_thread_before_the_rest_of_its_batch(bool allow)
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        var first = await h.OccupyAsync(100);
        Task<InferenceResponse>? second = null;
#pragma warning disable CA2012 // the awaiter is read once, inside its own completion callback
        var awaiter = h.Client.InferAsync("m", WithContinuation(FakeBackend.Request(1), allow)).GetAwaiter();
#pragma warning restore CA2012
        int resumedOn = 0;
        bool secondAnsweredFirst = false;
        InferenceResponse? answer = null;
        var resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        awaiter.UnsafeOnCompleted(() =>
        {
            resumedOn = Environment.CurrentManagedThreadId;
            secondAnsweredFirst = second!.IsCompleted;
            answer = awaiter.GetResult();
            resumed.SetResult();
        });
        second = h.Client.InferAsync("m", WithContinuation(FakeBackend.Request(2), allow)).AsTask();

        h.Backend.Release();
        (await first).Dispose();
        await resumed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using (answer)
        {
            AssertAnswer(answer!, 1);
        }

        using (var r = await second)
        {
            AssertAnswer(r, 2);
        }

        Assert.Equal([1f, 2f], h.BatchIds()[1]);
        int batchThread = h.Backend.ThreadIds.ElementAt(1);
        if (allow)
        {
            // Run by the thread that ran the batch, before it answered the second request of the batch.
            Assert.Equal(batchThread, resumedOn);
            Assert.False(secondAnsweredFirst);
        }
        else
        {
            // Queued to the thread pool: it never runs on the batch thread while that thread is still answering.
            Assert.False(resumedOn == batchThread && !secondAnsweredFirst, "The continuation ran inline on the batch thread.");
        }

        static InferenceRequest WithContinuation(InferenceRequest r, bool allow) => new(r.InputArray)
        {
            Id = r.Id,
            AllowSynchronousContinuation = allow,
        };
    }

    [Fact]
    public async Task Higher_priority_runs_first_and_a_low_priority_lane_is_not_starved()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 1;
            o.Batching.StarvationLimit = 2;
        });
        var first = await h.OccupyAsync(100);
        var low = Send(h, 1, InferencePriority.Low).AsTask();
        var high = Enumerable.Range(11, 6).Select(i => Send(h, i, InferencePriority.High).AsTask()).ToArray();
        h.Backend.Release();
        (await first).Dispose();
        (await low).Dispose();
        foreach (var t in high)
        {
            (await t).Dispose();
        }

        var order = h.BatchIds().Skip(1).Select(static b => (int)b[0]).ToList();
        Assert.Equal([11, 12, 1, 13, 14, 15, 16], order);
    }

    [Fact]
    public async Task Within_a_priority_the_earliest_deadline_runs_first()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1);
        var first = await h.OccupyAsync(100);
        var late = Send(h, 1, timeout: TimeSpan.FromSeconds(30)).AsTask();
        var none = Send(h, 2).AsTask();
        var soon = Send(h, 3, timeout: TimeSpan.FromSeconds(5)).AsTask();
        h.Backend.Release();
        foreach (var t in new[] { first, late, none, soon })
        {
            (await t).Dispose();
        }

        var order = h.BatchIds().Skip(1).Select(static b => (int)b[0]).ToList();
        Assert.Equal([3, 1, 2], order);
    }

    [Fact]
    public async Task A_request_whose_deadline_passes_in_the_queue_is_answered_at_its_deadline_and_never_runs()
    {
        await using var h = await Harness.CreateAsync();
        var first = await h.OccupyAsync(100);
        var doomed = Send(h, 7, timeout: TimeSpan.FromMilliseconds(100)).AsTask();
        var patient = Send(h, 8).AsTask();

        h.Time.Advance(TimeSpan.FromMilliseconds(99));
        Assert.False(doomed.IsCompleted);
        h.Time.Advance(TimeSpan.FromMilliseconds(1));
        using (var r = await doomed)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.Contains("not run", r.Message, StringComparison.Ordinal);
            Assert.Throws<InvalidOperationException>(() => r.Outputs);
        }

        h.Backend.Release();
        (await first).Dispose();
        using (var r = await patient)
        {
            AssertAnswer(r, 8);
        }

        Assert.DoesNotContain(h.BatchIds(), b => b.Contains(7f));
    }

    [Fact]
    public async Task A_result_that_arrives_after_the_deadline_is_not_delivered()
    {
        // Each run takes 50 ms of (fake) time; the request allows 20 ms, infeasibility checks off.
        await using var h = await Harness.CreateAsync(
            o => o.Batching.RefuseInfeasibleDeadlines = false,
            computeTime: _ => TimeSpan.FromMilliseconds(50));
        using var r = await Send(h, 5, timeout: TimeSpan.FromMilliseconds(20));
        Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
        Assert.Single(h.BatchIds());
    }

    [Theory]
    [InlineData(2, InferenceStatus.DeadlineExceeded)]
    [InlineData(0, InferenceStatus.Success)]
    public async Task A_result_ready_within_the_delivery_margin_of_the_deadline_is_not_delivered(int marginMs, InferenceStatus expected)
    {
        // The run takes 19 ms of fake time; the request allows 20 ms.
        await using var h = await Harness.CreateAsync(
            o =>
            {
                o.Batching.RefuseInfeasibleDeadlines = false;
                o.Batching.DeliveryMargin = TimeSpan.FromMilliseconds(marginMs);
            },
            computeTime: _ => TimeSpan.FromMilliseconds(19));
        using var r = await Send(h, 5, timeout: TimeSpan.FromMilliseconds(20));
        Assert.Equal(expected, r.Status);
        if (expected == InferenceStatus.DeadlineExceeded)
        {
            Assert.Contains("within the delivery margin", r.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task An_estimate_made_stale_by_a_slow_warm_up_does_not_refuse_an_idle_model_for_good()
    {
        // The warm-up's runs take 80 ms of fake time, every later run 1 ms; requests allow 50 ms. Refusing every request
        // as infeasible would never run one, so the estimate (learned from runs) would stay at 80 ms for good.
        bool slow = true;
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(slow ? 80 : 1));
        slow = false;
        var timeout = TimeSpan.FromMilliseconds(50);

        int probes = 0;
        bool recovered = false;
        for (int round = 0; round < 200 && !recovered; round++)
        {
            using var first = await Send(h, (2 * round) + 1, timeout: timeout);
            using var second = await Send(h, (2 * round) + 2, timeout: timeout);
            foreach (var r in new[] { first, second })
            {
                // Each one either runs (and, at 1 ms, answers in time) or is refused as infeasible: nothing else.
                Assert.True(r.IsSuccess || r.RefusalReason == RefusalReason.DeadlineInfeasible, $"{r.Status} {r.RefusalReason}: {r.Message}");
            }

            // Back to back, on an idle model: while the estimate refuses, at most the first is let through to measure again.
            Assert.False(second.IsSuccess && !first.IsSuccess, "a request admitted to measure came right after a refused one, within the interval");
            probes += first.IsSuccess && !second.IsSuccess ? 1 : 0;
            recovered = first.IsSuccess && second.IsSuccess;
            h.Time.Advance(ModelScheduler.InfeasibleProbeInterval);
        }

        Assert.True(recovered, $"the model still refused back-to-back requests after {probes} re-measuring runs");
        Assert.True(probes > 0, "the stale estimate never refused: the test did not exercise it");
    }

    [Fact]
    public async Task A_model_truly_slower_than_the_deadline_runs_one_request_per_interval_without_runs_and_never_answers_it_late()
    {
        // Every run takes 80 ms of fake time; requests allow 50 ms.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(80));
        using (var fresh = await Send(h, 99, timeout: TimeSpan.FromMilliseconds(50)))
        {
            // Just after the warm-up measured it, the estimate is fresh: refused, not run.
            Assert.Equal(RefusalReason.DeadlineInfeasible, fresh.RefusalReason);
        }

        for (int round = 0; round < 3; round++)
        {
            // No run for an interval: the estimate may be stale.
            h.Time.Advance(ModelScheduler.InfeasibleProbeInterval);
            var answers = new List<InferenceResponse>();
            for (int i = 0; i < 5; i++)
            {
                answers.Add(await Send(h, (10 * round) + i, timeout: TimeSpan.FromMilliseconds(50)));
            }

            // The first of each interval runs, and its result (80 ms, past its deadline) is not delivered; the rest are refused at once.
            Assert.Equal(InferenceStatus.DeadlineExceeded, answers[0].Status);
            Assert.All(answers.Skip(1), r => Assert.Equal(RefusalReason.DeadlineInfeasible, r.RefusalReason));
            answers.ForEach(r => r.Dispose());
        }
    }

    [Fact]
    public async Task A_deadline_that_cannot_be_met_is_refused_at_admission_with_a_retry_hint()
    {
        // Runs take 10 ms of fake time (warm-up measures it); five requests queue ahead of one allowing 20 ms.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(10));
        var first = await h.OccupyAsync(100);
        var ahead = Enumerable.Range(1, 5).Select(i => Send(h, i).AsTask()).ToArray();

        var refused = Send(h, 9, timeout: TimeSpan.FromMilliseconds(20));
        Assert.True(refused.IsCompleted);
        using (var r = await refused)
        {
            Assert.Equal(InferenceStatus.Refused, r.Status);
            Assert.Equal(RefusalReason.DeadlineInfeasible, r.RefusalReason);
            Assert.NotNull(r.RetryAfter);
            Assert.True(r.RetryAfter > TimeSpan.Zero);
        }

        var feasible = Send(h, 10, timeout: TimeSpan.FromSeconds(10)).AsTask();
        Assert.False(feasible.IsCompleted);
        h.Backend.Release();
        foreach (var t in ahead.Append(first).Append(feasible))
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
        }
    }

    [Fact]
    public async Task A_full_queue_refuses_at_once_and_accepts_again_once_it_drains()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxQueueLength = 2);
        var first = await h.OccupyAsync(100);
        var a = Send(h, 1).AsTask();
        var b = Send(h, 2).AsTask();
        var refused = Send(h, 3);
        Assert.True(refused.IsCompleted);
        using (var r = await refused)
        {
            Assert.Equal(RefusalReason.QueueFull, r.RefusalReason);
            Assert.Contains("queue is full", r.Message, StringComparison.Ordinal);
            var ex = Assert.Throws<InferenceRefusedException>(() => r.EnsureSuccess());
            Assert.Equal(RefusalReason.QueueFull, ex.Reason);
        }

        h.Backend.Release();
        foreach (var t in new[] { first, a, b })
        {
            (await t).Dispose();
        }

        using var again = await Send(h, 4);
        AssertAnswer(again, 4);
    }

    [Fact]
    public async Task Cancelling_a_queued_request_removes_it_before_it_runs()
    {
        await using var h = await Harness.CreateAsync();
        var first = await h.OccupyAsync(100);
        using var cts = new CancellationTokenSource();
        var cancelled = h.Client.InferAsync("m", FakeBackend.Request(6), cts.Token).AsTask();
        var kept = Send(h, 7).AsTask();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(1, h.InternalRegistry.GetScheduler("m").QueueLength);

        h.Backend.Release();
        (await first).Dispose();
        using (var r = await kept)
        {
            AssertAnswer(r, 7);
        }

        Assert.DoesNotContain(h.BatchIds(), b => b.Contains(6f));
    }

    [Fact]
    public async Task A_request_answered_under_a_cancellable_token_is_reused_and_that_token_cannot_cancel_the_next_request()
    {
        // An HTTP request always carries a cancellable token (RequestAborted): its request object must go back to the
        // pool too, and only once its cancellation callback can no longer run.
        await using var h = await Harness.CreateAsync();
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100);
        using var cts = new CancellationTokenSource();
        var answered = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token).AsTask();
        int pooled = scheduler.PooledRequests;
        h.Backend.Release();
        (await first).Dispose();
        using (var r = await answered)
        {
            AssertAnswer(r, 1);
        }

        Assert.Equal(pooled + 2, scheduler.PooledRequests);

        // The next requests take the pooled objects, one of them the answered request's; its token is cancelled now.
        var second = await h.OccupyAsync(200);
        var next = Send(h, 2).AsTask();
        await cts.CancelAsync();
        h.Backend.Release();
        (await second).Dispose();
        using (var r = await next)
        {
            AssertAnswer(r, 2);
        }
    }

    [Fact]
    public async Task A_request_whose_cancellation_callback_ran_is_not_reused()
    {
        await using var h = await Harness.CreateAsync();
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100);
        using var cts = new CancellationTokenSource();
        var cancelled = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token).AsTask();
        int pooled = scheduler.PooledRequests;
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(pooled, scheduler.PooledRequests);

        h.Backend.Release();
        (await first).Dispose();
        Assert.Equal(pooled + 1, scheduler.PooledRequests);
    }

    /// <summary>
    /// Cancels request <paramref name="id"/>'s token the first time a batch is about to start from it, from another thread
    /// as a client's cancellation comes, and waits until the cancellation has ended the request (the canceller then waits
    /// for the scheduler's lock, which this thread holds). Returns how many times that happened.
    /// </summary>
    private static Func<int> CancelWhenABatchStartsFrom(ModelScheduler scheduler, string id, CancellationTokenSource cts)
    {
        int hooked = 0;
        scheduler.BeforeFirstTake = head =>
        {
            if (head.Request.Id != id || Interlocked.Exchange(ref hooked, 1) != 0)
            {
                return;
            }

            _ = Task.Run(cts.Cancel);
            Assert.True(SpinWait.SpinUntil(() => head.State == PendingRequest.Done, TimeSpan.FromSeconds(30)));
        };
        return () => Volatile.Read(ref hooked);
    }

    [Fact]
    public async Task A_head_cancelled_on_another_thread_while_a_batch_forms_is_skipped_and_the_batch_starts_from_the_next()
    {
        // Cancellation ends a queued request without the scheduler's lock. Here it lands between the moment a batch
        // chooses its first request and the moment it takes it: that batch must start from the next live request (it
        // used to be left empty and the thread forming it crashed with NullReferenceException, taking the process down).
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 4);
        var scheduler = h.InternalRegistry.GetScheduler("m");
        var first = await h.OccupyAsync(100);
        using var cts = new CancellationTokenSource();
        var cancelled = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token).AsTask();
        var second = h.Client.InferAsync("m", FakeBackend.Request(2)).AsTask();
        var third = h.Client.InferAsync("m", FakeBackend.Request(3)).AsTask();
        var hooked = CancelWhenABatchStartsFrom(scheduler, "1", cts);

        h.Backend.Release();
        (await first).Dispose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        using (var r2 = await second)
        {
            AssertAnswer(r2, 2);
        }

        using (var r3 = await third)
        {
            AssertAnswer(r3, 3);
        }

        Assert.Equal(1, hooked());
        Assert.Equal([[100f], [2f, 3f]], h.BatchIds());

        // The scheduler goes on serving.
        scheduler.BeforeFirstTake = null;
        using var r4 = await Send(h, 4);
        AssertAnswer(r4, 4);
    }

    [Fact]
    public async Task With_a_queue_delay_a_head_cancelled_while_a_batch_forms_does_not_take_the_next_request_with_it()
    {
        // With a queue delay, the batch former peeks every lane's head (for the oldest request) after it chose its first
        // request and before it takes it. A first request cancelled in between was dropped there as a stale entry, and the
        // take then removed the next request from the queue in its place: that request was never run nor answered, and
        // its lane's count stayed one too high for good.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 2;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(10);
        });
        var scheduler = h.InternalRegistry.GetScheduler("m");
        h.Backend.Hold();
        var occupying = h.Client.InferAsync("m", FakeBackend.Request(100)).AsTask();
        h.Time.Advance(TimeSpan.FromMilliseconds(10)); // its queue delay passes: it runs, and is held
        await h.Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));

        using var cts = new CancellationTokenSource();
        var cancelled = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token).AsTask();
        var second = h.Client.InferAsync("m", FakeBackend.Request(2)).AsTask();
        var third = h.Client.InferAsync("m", FakeBackend.Request(3)).AsTask();
        var hooked = CancelWhenABatchStartsFrom(scheduler, "1", cts);

        h.Backend.Release();
        (await occupying).Dispose();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        using (var r2 = await second.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            AssertAnswer(r2, 2);
        }

        using (var r3 = await third.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            AssertAnswer(r3, 3);
        }

        Assert.Equal(1, hooked());
        Assert.Equal([[100f], [2f, 3f]], h.BatchIds());
        Assert.Equal(0, scheduler.QueueLength);
        Assert.Equal(0, scheduler.Active);
    }

    [Fact]
    public async Task With_a_queue_delay_the_only_request_cancelled_while_its_batch_forms_leaves_the_scheduler_serving()
    {
        // The same race with nothing behind the cancelled request: the take found its lane empty and threw
        // InvalidOperationException out of the batch former, holding the instance's reservation for good (on a pool
        // thread or the timer, the exception would end the process).
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 1;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(10);
        });
        var scheduler = h.InternalRegistry.GetScheduler("m");
        using var cts = new CancellationTokenSource();
        var hooked = CancelWhenABatchStartsFrom(scheduler, "1", cts);

        // A lone caller forms its own batch on its own thread.
        var cancelled = h.Client.InferAsync("m", FakeBackend.Request(1), cts.Token).AsTask();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(1, hooked());

        scheduler.BeforeFirstTake = null;
        using var r = await h.Client.InferAsync("m", FakeBackend.Request(2)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        AssertAnswer(r, 2);
        Assert.Equal(0, scheduler.Active);
    }

    [Fact]
    public async Task Many_concurrent_callers_each_get_exactly_their_own_rows()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 16, instances: 2);
        const int callers = 32;
        const int perCaller = 40;
        var tasks = Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < perCaller; i++)
            {
                int id = 1 + (c * perCaller) + i;
                int rows = 1 + (id % 3);
                using var r = await Send(h, id, rows: rows);
                AssertAnswer(r, id, rows);
            }
        })).ToArray();
        await Task.WhenAll(tasks);

        var seen = h.Backends.SelectMany(static b => b.Batches).SelectMany(static b => b).Distinct().Count();
        Assert.Equal(callers * perCaller, seen);
        Assert.All(h.Backends.SelectMany(static b => b.Batches), b => Assert.True(b.Length <= 16));
    }

    [Fact]
    public async Task Concurrent_callers_cancelling_some_requests_never_cancel_or_answer_anyone_else()
    {
        // Request objects are reused across callers whose tokens can be cancelled. Each caller cancels some requests
        // while they wait, and cancels every answered request's token later, while another request may be using that
        // request's object: a cancellation must only ever end the request whose token it is, and every other caller must
        // get exactly its own rows.
        // Every request queues (no inline runs), so every one registers its cancellation callback.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 16;
            o.Batching.AllowInlineExecution = false;
        }, instances: 2);
        const int callers = 16;
        const int perCaller = 60;
        var tasks = Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            CancellationTokenSource? answered = null;
            for (int i = 0; i < perCaller; i++)
            {
                int id = 1 + (c * perCaller) + i;
                var cts = new CancellationTokenSource();
                var pending = h.Client.InferAsync("m", FakeBackend.Request(id), cts.Token);
                bool cancel = id % 3 == 0;
                if (cancel)
                {
                    await cts.CancelAsync();
                }

                if (answered is not null)
                {
                    await answered.CancelAsync();
                    answered.Dispose();
                }

                try
                {
                    using var r = await pending;
                    AssertAnswer(r, id);
                }
                catch (OperationCanceledException)
                {
                    Assert.True(cancel, $"request {id} was cancelled, but its own token was not");
                }

                answered = cts;
            }

            answered?.Dispose();
        })).ToArray();
        await Task.WhenAll(tasks);
    }

    [Fact]
    public async Task A_model_without_a_batch_axis_runs_one_request_per_run_across_its_instances()
    {
        await using var h = await Harness.CreateAsync(instances: 2, batchable: false);
        var tasks = Enumerable.Range(1, 20).Select(i => Task.Run(async () =>
        {
            using var r = await Send(h, i);
            AssertAnswer(r, i);
        })).ToArray();
        await Task.WhenAll(tasks);
        Assert.All(h.Backends.SelectMany(static b => b.Batches), b => Assert.Single(b));
        Assert.Equal(20, h.Backends.Sum(static b => b.Batches.Count));
    }

    [Fact]
    public async Task Adaptive_batch_cap_grows_until_a_batch_exceeds_the_target_then_backs_off()
    {
        // A batch of n rows takes n ms of fake time; the target is 10 ms.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 32;
            o.Batching.Adaptive.Enabled = true;
            o.Batching.Adaptive.LatencyTarget = TimeSpan.FromMilliseconds(10);
            o.Batching.Adaptive.InitialBatchSize = 1;
        }, computeTime: rows => TimeSpan.FromMilliseconds(rows));
        var scheduler = h.InternalRegistry.GetScheduler("m");
        for (int round = 0; round < 30; round++)
        {
            var first = await h.OccupyAsync(100 + round);
            var queued = Enumerable.Range(1, 32).Select(i => Send(h, i).AsTask()).ToArray();
            h.Backend.Release();
            (await first).Dispose();
            foreach (var t in queued)
            {
                (await t).Dispose();
            }
        }

        var sizes = h.BatchIds().Select(static b => b.Length).ToList();
        Assert.True(sizes.Max() <= 11, $"largest batch {sizes.Max()}");
        Assert.Contains(11, sizes);
        Assert.InRange(scheduler.BatchCap, 9, 11);
    }
}
