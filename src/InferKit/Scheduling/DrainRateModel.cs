namespace InferKit.Scheduling;

/// <summary>
/// Learns how many rows per second a model version actually answers while work is queued: rows completed over windows
/// of at least <c>window</c> in which every completing batch left work queued behind it. Unlike the batch latency, the
/// rate counts what the time between batches costs under load (forming and splitting batches, answering callers, thread
/// switches, other work on the machine), which is what a queue drains at. It keeps a <see cref="SpreadEstimate"/> of the
/// windows' rates and reports mean − 2 × deviation (at least a quarter of the mean): a bad-but-usual window, as
/// <see cref="BatchLatencyModel"/> judges batches. Thread-safe; reads are lock-free.
/// </summary>
internal sealed class DrainRateModel
{
    private readonly long _window;
    private readonly double _frequency;
    private readonly Lock _gate = new();
    private long _start;
    private long _rows;
    private bool _backlogged;
    private double _mean;
    private double _deviation;
    private double _rate;

    /// <param name="window">The shortest span one rate sample covers, in timestamp ticks.</param>
    /// <param name="frequency">Timestamp ticks per second.</param>
    public DrainRateModel(long window, long frequency)
    {
        _window = Math.Max(1, window);
        _frequency = frequency;
    }

    /// <summary>Rows per second a backlog drains at (a cautious estimate), or 0 before any backlogged window was seen.</summary>
    public double RowsPerSecond => Volatile.Read(ref _rate);

    /// <summary>Counts a batch of <paramref name="rows"/> rows completed at <paramref name="now"/>; <paramref name="backlogged"/>: work was still queued.</summary>
    public void Record(int rows, long now, bool backlogged)
    {
        lock (_gate)
        {
            if (_start == 0)
            {
                Restart(now, backlogged);
                return;
            }

            _rows += rows;
            _backlogged &= backlogged;
            long elapsed = now - _start;
            if (elapsed < _window)
            {
                return;
            }

            if (_backlogged)
            {
                SpreadEstimate.Add(ref _mean, ref _deviation, _rows * _frequency / elapsed);
                Volatile.Write(ref _rate, Math.Max(_mean / 4, _mean - (SpreadEstimate.DeviationWeight * _deviation)));
            }

            Restart(now, backlogged);
        }
    }

    // A window starts at a completion: the rows counted are those completed after it.
    private void Restart(long now, bool backlogged)
    {
        _start = now;
        _rows = 0;
        _backlogged = backlogged;
    }
}
