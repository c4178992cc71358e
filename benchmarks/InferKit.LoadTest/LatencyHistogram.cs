using System.Diagnostics;

namespace InferKit.LoadTest;

/// <summary>
/// A lock-free log-linear histogram of durations (Stopwatch ticks): exact below 128 ticks, then 64 sub-buckets per
/// power of two (under 1.6% error). Fixed size, so recording allocates nothing and memory stays flat under load.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int Linear = 128;
    private const int SubBits = 6;
    private const int Sub = 1 << SubBits;
    private const int MaxExponent = 46;
    private readonly long[] _counts = new long[Linear + ((MaxExponent - 6) * Sub)];
    private long _max;

    /// <summary>
    /// The values recorded: the sum of the buckets. Recording touches only a value's bucket (and the maximum when it
    /// rises), so threads that record on different cores share as few cache lines as the values allow; a count of
    /// its own would be written by every record on every core.
    /// </summary>
    public long Count
    {
        get
        {
            long total = 0;
            for (int i = 0; i < _counts.Length; i++)
            {
                total += Volatile.Read(ref _counts[i]);
            }

            return total;
        }
    }

    public void Record(long ticks)
    {
        if (ticks < 0)
        {
            ticks = 0;
        }

        Interlocked.Increment(ref _counts[IndexOf(ticks)]);
        RaiseTo(ref _max, ticks);
    }

    /// <summary>Atomically raises <paramref name="target"/> to <paramref name="value"/> when the value is larger.</summary>
    public static void RaiseTo(ref long target, long value)
    {
        long current = Volatile.Read(ref target);
        while (value > current)
        {
            long seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                break;
            }

            current = seen;
        }
    }

    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }

        _max = Math.Max(_max, other._max);
    }

    /// <summary>The value at quantile <paramref name="q"/> (0..1) in milliseconds; NaN when empty.</summary>
    public double PercentileMs(double q)
    {
        long total = Count;
        if (total == 0)
        {
            return double.NaN;
        }

        if (q >= 1)
        {
            return ToMs(Volatile.Read(ref _max));
        }

        long rank = Math.Max(1, (long)Math.Ceiling(q * total));
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += Volatile.Read(ref _counts[i]);
            if (seen >= rank)
            {
                return ToMs(Math.Min(UpperBound(i), Volatile.Read(ref _max)));
            }
        }

        return ToMs(Volatile.Read(ref _max));
    }

    public double MaxMs => Count == 0 ? double.NaN : ToMs(Volatile.Read(ref _max));

    private static double ToMs(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    private static int IndexOf(long v)
    {
        if (v < Linear)
        {
            return (int)v;
        }

        int e = 63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)v); // >= 7
        if (e >= MaxExponent)
        {
            return Linear + ((MaxExponent - 7) * Sub) + (Sub - 1);
        }

        int sub = (int)((v >> (e - SubBits)) & (Sub - 1));
        return Linear + ((e - 7) * Sub) + sub;
    }

    private static long UpperBound(int index)
    {
        if (index < Linear)
        {
            return index;
        }

        int e = ((index - Linear) / Sub) + 7;
        int sub = (index - Linear) % Sub;
        long width = 1L << (e - SubBits);
        return (1L << e) + ((sub + 1) * width) - 1;
    }
}
