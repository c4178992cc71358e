using InferKit.Scheduling;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// A priority level's queue: earliest deadline first and arrival order among equal deadlines, whatever order requests
/// come in; requests that arrive in deadline order never need the heap.
/// </summary>
public class DeadlineQueueTests
{
    private long _sequence;

    [Fact]
    public void Requests_arriving_in_deadline_order_come_out_in_that_order_without_the_heap()
    {
        var queue = new DeadlineQueue();
        var requests = new List<PendingRequest>();
        for (int i = 0; i < 100; i++)
        {
            // Equal deadlines in runs of three (arrival order decides), then later ones.
            requests.Add(Request(1_000 + (i / 3)));
            queue.Enqueue(requests[^1]);
        }

        Assert.Equal(100, queue.Count);
        Assert.Equal(0, queue.Overtakers);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(queue.TryPeek(out var head));
            Assert.Same(requests[i], head);
            Assert.Same(requests[i], queue.Dequeue());
        }

        Assert.Equal(0, queue.Count);
        Assert.False(queue.TryPeek(out _));
        Assert.False(queue.TryDequeue(out _));
        Assert.Throws<InvalidOperationException>(() => queue.Dequeue());
    }

    [Fact]
    public void A_request_with_an_earlier_deadline_overtakes_those_queued_and_one_put_back_keeps_its_place()
    {
        var queue = new DeadlineQueue();
        var late1 = Request(500);
        var late2 = Request(500);
        var urgent = Request(100);
        var last = Request(900);
        queue.Enqueue(late1);
        queue.Enqueue(late2);
        queue.Enqueue(urgent);
        queue.Enqueue(last);
        Assert.Equal(1, queue.Overtakers);

        Assert.Same(urgent, queue.Dequeue());
        Assert.Same(late1, queue.Dequeue());

        // Put back (a batch that gave it up): it goes before late2, which arrived after it.
        queue.Enqueue(late1);
        Assert.Same(late1, queue.Dequeue());
        Assert.Same(late2, queue.Dequeue());
        Assert.Same(last, queue.Dequeue());
        Assert.Equal(0, queue.Count);
    }

    [Fact]
    public void Random_mixes_of_arrivals_put_backs_and_removals_match_a_sorted_reference()
    {
        var random = new Random(42);
        var queue = new DeadlineQueue();
        var reference = new SortedSet<PendingRequest>(Comparer<PendingRequest>.Create((a, b) => (a.Deadline, a.Sequence).CompareTo((b.Deadline, b.Sequence))));
        var taken = new List<PendingRequest>();
        long clock = 0;
        for (int step = 0; step < 20_000; step++)
        {
            int action = random.Next(10);
            if (action < 5)
            {
                // Mostly one timeout (deadline order), sometimes a shorter or a longer one.
                clock += random.Next(3);
                long deadline = clock + (random.Next(4) == 0 ? random.Next(0, 200) : 100);
                var request = Request(deadline);
                queue.Enqueue(request);
                reference.Add(request);
            }
            else if (action < 6 && taken.Count > 0)
            {
                var back = taken[random.Next(taken.Count)];
                taken.Remove(back);
                queue.Enqueue(back);
                reference.Add(back);
            }
            else if (reference.Count > 0)
            {
                Assert.True(queue.TryPeek(out var peeked));
                Assert.Same(reference.Min, peeked);
                var head = queue.Dequeue();
                Assert.Same(peeked, head);
                reference.Remove(head);
                if (taken.Count < 50)
                {
                    taken.Add(head);
                }
            }

            Assert.Equal(reference.Count, queue.Count);
        }

        while (queue.TryDequeue(out var rest))
        {
            Assert.Same(reference.Min, rest);
            reference.Remove(rest);
        }

        Assert.Empty(reference);
    }

    private PendingRequest Request(long deadline)
    {
        var request = new PendingRequest(null!, 1);
        request.Init(null!, 1, 0, null, 0, deadline, 0, ++_sequence, CancellationToken.None);
        return request;
    }
}
