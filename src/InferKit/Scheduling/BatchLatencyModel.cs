namespace InferKit.Scheduling;

/// <summary>
/// Learns the latency of a batch per size and estimates sizes not yet seen by interpolation. Per size it keeps a
/// <see cref="SpreadEstimate"/> and estimates mean + 2 × deviation: deadlines are judged against a bad-but-usual batch,
/// not an average one. Seeded by warm-up. Thread-safe; reads are lock-free.
/// </summary>
internal sealed class BatchLatencyModel
{
    private readonly double[] _seconds;
    private readonly double[] _mean;
    private readonly double[] _deviation;
    private readonly Lock _gate = new();

    public BatchLatencyModel(int maxBatchSize)
    {
        _seconds = new double[Math.Max(1, maxBatchSize) + 1];
        _mean = new double[_seconds.Length];
        _deviation = new double[_seconds.Length];
    }

    public int MaxBatchSize => _seconds.Length - 1;

    public bool HasData { get; private set; }

    /// <summary>How many latencies were recorded so far: it changes whenever a run refreshes the estimate.</summary>
    public long Samples => Volatile.Read(ref _samples);

    private long _samples;

    /// <summary>
    /// Folds in the latency of a run of <paramref name="rows"/> rows. A run of more rows than <see cref="MaxBatchSize"/> (one
    /// request that large runs alone) is no batch the scheduler forms, and is not counted: recorded as a batch of
    /// <see cref="MaxBatchSize"/> rows, it made full batches (and the sizes interpolated below them) look as slow as it was,
    /// and admission refused deadlines they meet.
    /// </summary>
    public void Record(int rows, double seconds)
    {
        if (rows <= 0 || rows >= _seconds.Length || seconds <= 0 || !double.IsFinite(seconds))
        {
            return;
        }

        int i = rows;
        lock (_gate)
        {
            SpreadEstimate.Add(ref _mean[i], ref _deviation[i], seconds);
            Volatile.Write(ref _seconds[i], _mean[i] + (SpreadEstimate.DeviationWeight * _deviation[i]));
            HasData = true;
            Volatile.Write(ref _samples, _samples + 1);
        }
    }

    /// <summary>The expected latency of a batch of <paramref name="rows"/> rows in seconds, or 0 when nothing was measured.</summary>
    public double Estimate(int rows)
    {
        var s = _seconds;
        int i = Math.Clamp(rows, 1, s.Length - 1);
        if (s[i] > 0)
        {
            return s[i];
        }

        int lo = i - 1;
        while (lo >= 1 && s[lo] == 0)
        {
            lo--;
        }

        int hi = i + 1;
        while (hi < s.Length && s[hi] == 0)
        {
            hi++;
        }

        bool hasLo = lo >= 1;
        bool hasHi = hi < s.Length;
        if (hasLo && hasHi)
        {
            double t = (i - lo) / (double)(hi - lo);
            return s[lo] + ((s[hi] - s[lo]) * t);
        }

        if (hasLo)
        {
            // Beyond the largest size seen: assume cost grows no faster than linearly.
            return s[lo] * i / lo;
        }

        return hasHi ? s[hi] : 0;
    }
}
