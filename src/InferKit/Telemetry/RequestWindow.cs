namespace InferKit.Telemetry;

/// <summary>
/// Request counts and a latency histogram over a sliding window of equal slots, one slot per alert evaluation.
/// Recording is lock-free (a few interlocked increments on the current slot); the evaluator reads every slot and then
/// advances, clearing the oldest. Only allocated when alert rules exist.
/// </summary>
/// <remarks>
/// Latency buckets are log-linear: 8 per power of two from 2^-20 s (about 1 µs) to 2^8 s, so a bucket's upper bound
/// is at most 12.5% above any value in it. The reported percentile is that upper bound, capped by the largest value seen.
/// </remarks>
internal sealed class RequestWindow
{
    private const int MinExponent = -20;
    private const int MaxExponent = 8;
    private const int SubBuckets = 8;
    private const int BucketCount = ((MaxExponent - MinExponent) * SubBuckets) + 2; // + underflow and overflow

    private readonly Slot[] _slots;
    private volatile int _current;

    public RequestWindow(int slots)
    {
        _slots = new Slot[Math.Max(1, slots)];
        for (int i = 0; i < _slots.Length; i++)
        {
            _slots[i] = new Slot();
        }
    }

    public int SlotCount => _slots.Length;

    public void Record(InferenceOutcome outcome, double seconds)
    {
        var slot = _slots[_current];
        Interlocked.Increment(ref slot.Total);
        switch (outcome)
        {
            case InferenceOutcome.Refused:
                Interlocked.Increment(ref slot.Refused);
                return;
            case InferenceOutcome.Cancelled:
                return;
            case InferenceOutcome.Error:
            case InferenceOutcome.DeadlineExceeded:
                Interlocked.Increment(ref slot.Errors);
                break;
        }

        Interlocked.Increment(ref slot.Latencies[BucketOf(seconds)]);
        Interlocked.Increment(ref slot.LatencyCount);
        double max = Volatile.Read(ref slot.MaxLatency);
        while (seconds > max)
        {
            double seen = Interlocked.CompareExchange(ref slot.MaxLatency, seconds, max);
            if (seen == max)
            {
                break;
            }

            max = seen;
        }
    }

    /// <summary>Sums every slot (the whole window).</summary>
    public WindowSnapshot Snapshot()
    {
        long total = 0, errors = 0, refused = 0, latencyCount = 0;
        double max = 0;
        Span<long> buckets = stackalloc long[BucketCount];
        foreach (var slot in _slots)
        {
            total += Volatile.Read(ref slot.Total);
            errors += Volatile.Read(ref slot.Errors);
            refused += Volatile.Read(ref slot.Refused);
            latencyCount += Volatile.Read(ref slot.LatencyCount);
            max = Math.Max(max, Volatile.Read(ref slot.MaxLatency));
            for (int b = 0; b < BucketCount; b++)
            {
                buckets[b] += Volatile.Read(ref slot.Latencies[b]);
            }
        }

        double p99 = 0;
        long counted = 0;
        for (int b = 0; b < BucketCount; b++)
        {
            counted += buckets[b];
        }

        if (counted > 0)
        {
            long rank = (long)Math.Ceiling(counted * 0.99);
            long cumulative = 0;
            for (int b = 0; b < BucketCount; b++)
            {
                cumulative += buckets[b];
                if (cumulative >= rank)
                {
                    p99 = Math.Min(UpperBound(b), max);
                    break;
                }
            }
        }

        return new WindowSnapshot(total, errors, refused, latencyCount, p99);
    }

    /// <summary>Moves recording to the next slot, clearing it first: the oldest slot leaves the window.</summary>
    public void Advance()
    {
        int next = (_current + 1) % _slots.Length;
        _slots[next].Clear();
        _current = next;
    }

    internal static int BucketOf(double seconds)
    {
        if (!(seconds >= Math.ScaleB(1.0, MinExponent)))
        {
            return 0; // underflow (and NaN)
        }

        long bits = BitConverter.DoubleToInt64Bits(seconds);
        int exponent = (int)((bits >> 52) & 0x7FF) - 1023;
        if (exponent >= MaxExponent)
        {
            return BucketCount - 1;
        }

        int sub = (int)((bits >> (52 - 3)) & (SubBuckets - 1));
        return 1 + ((exponent - MinExponent) * SubBuckets) + sub;
    }

    internal static double UpperBound(int bucket)
    {
        if (bucket == 0)
        {
            return Math.ScaleB(1.0, MinExponent);
        }

        if (bucket >= BucketCount - 1)
        {
            return double.PositiveInfinity;
        }

        int index = bucket - 1;
        int exponent = MinExponent + (index / SubBuckets);
        int sub = index % SubBuckets;
        return Math.ScaleB(1.0 + ((sub + 1) / (double)SubBuckets), exponent);
    }

    private sealed class Slot
    {
        public readonly long[] Latencies = new long[BucketCount];
        public long Total;
        public long Errors;
        public long Refused;
        public long LatencyCount;
        public double MaxLatency;

        public void Clear()
        {
            Array.Clear(Latencies);
            Volatile.Write(ref Total, 0);
            Volatile.Write(ref Errors, 0);
            Volatile.Write(ref Refused, 0);
            Volatile.Write(ref LatencyCount, 0);
            Volatile.Write(ref MaxLatency, 0);
        }
    }
}

/// <summary>A window's totals: requests ended, errors (failed or past deadline), refusals, latency samples and p99 (s).</summary>
internal readonly record struct WindowSnapshot(long Total, long Errors, long Refused, long LatencyCount, double P99Seconds)
{
    public double ErrorRate => Total == 0 ? 0 : Errors / (double)Total;

    public double RefusalRate => Total == 0 ? 0 : Refused / (double)Total;
}
