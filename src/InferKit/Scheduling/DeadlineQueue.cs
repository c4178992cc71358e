namespace InferKit.Scheduling;

/// <summary>
/// One priority level's queue: earliest deadline first, then arrival order (<see cref="PendingRequest.Sequence"/>).
/// Requests usually arrive in deadline order (one timeout for everyone, or none), so a request that sorts at or after
/// the last one appended goes to a FIFO ring (O(1) in and out); only one that overtakes it (a shorter deadline, or a
/// request put back with its old place) goes to a heap. The head is the earlier of the two heads. Not thread-safe: the
/// scheduler calls it under its lock.
/// </summary>
internal sealed class DeadlineQueue
{
    private readonly PriorityQueue<PendingRequest, (long Deadline, long Sequence)> _heap = new();
    private PendingRequest?[] _ring = new PendingRequest?[16];
    private int _head;
    private int _count;

    public int Count => _count + _heap.Count;

    /// <summary>Requests held in the heap because they overtook the ring's tail (tests).</summary>
    internal int Overtakers => _heap.Count;

    public void Enqueue(PendingRequest request)
    {
        if (_count > 0 && Before(request, _ring[(_head + _count - 1) & (_ring.Length - 1)]!))
        {
            _heap.Enqueue(request, (request.Deadline, request.Sequence));
            return;
        }

        if (_count == _ring.Length)
        {
            Grow();
        }

        _ring[(_head + _count) & (_ring.Length - 1)] = request;
        _count++;
    }

    public bool TryPeek(out PendingRequest request)
    {
        if (_count == 0)
        {
            return _heap.TryPeek(out request!, out _);
        }

        request = _ring[_head]!;
        if (HeapHeadBefore(request, out var first))
        {
            request = first;
        }

        return true;
    }

    public bool TryDequeue(out PendingRequest request)
    {
        if (_count == 0)
        {
            return _heap.TryDequeue(out request!, out _);
        }

        request = _ring[_head]!;
        if (HeapHeadBefore(request, out _))
        {
            request = _heap.Dequeue();
            return true;
        }

        _ring[_head] = null;
        _head = (_head + 1) & (_ring.Length - 1);
        _count--;
        return true;
    }

    /// <summary>Removes the head (the request <see cref="TryPeek"/> returns).</summary>
    public PendingRequest Dequeue() => TryDequeue(out var request) ? request : throw new InvalidOperationException("The queue is empty.");

    /// <summary>True when the heap holds a request (<paramref name="first"/>) that goes before the ring's head.</summary>
    private bool HeapHeadBefore(PendingRequest ringHead, out PendingRequest first)
        => _heap.TryPeek(out first!, out _) && Before(first, ringHead);

    private static bool Before(PendingRequest a, PendingRequest b)
        => a.Deadline < b.Deadline || (a.Deadline == b.Deadline && a.Sequence < b.Sequence);

    private void Grow()
    {
        var ring = new PendingRequest?[_ring.Length * 2];
        for (int i = 0; i < _count; i++)
        {
            ring[i] = _ring[(_head + i) & (_ring.Length - 1)];
        }

        _ring = ring;
        _head = 0;
    }
}
