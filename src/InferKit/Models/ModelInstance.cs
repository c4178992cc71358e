using System.Globalization;
using InferKit.Backends;
using InferKit.LoadBalancing;
using InferKit.Telemetry;
using Microsoft.Extensions.Logging;

namespace InferKit.Models;

/// <summary>One loaded instance with its live load and passive-health state. Counters are updated lock-free.</summary>
internal sealed class ModelInstance : IDisposable
{
    private const double LatencyDecaySeconds = 5.0;

    /// <summary>The value of <see cref="_outstanding"/> once the instance is closed: no reservation can succeed again.</summary>
    private const int Closed = int.MinValue / 2;

    private readonly TimeProvider _time;
    private readonly InstanceHealthOptions _health;
    private readonly double? _configuredWeight;
    private readonly Lock _statsGate = new();
    private int _outstanding;
    private int _outstandingRows;
    private long _completed;
    private double _peakEwmaSeconds;
    private long _lastSampleTimestamp;
    private double _rowsPerSecond;
    private int _consecutiveFailures;
    private long _totalFailures;
    private long _outUntilTimestamp;
    private int _timesTakenOut;
    private int _disposed;

    /// <summary>
    /// The start timestamp of each run in progress, one slot per concurrent run, for the stuck-run watchdog (see
    /// <see cref="TryTakeOutStuck"/>); null when no RunTimeout is set. 0 is a free slot; a negative value is a run the
    /// watchdog took the instance out for (its start, negated), so that it neither takes it out again nor counts twice.
    /// </summary>
    private readonly long[]? _runStarts;

    /// <summary>Set by <see cref="CloseWhenIdleAsync"/>: the reservation released last closes the instance.</summary>
    private volatile bool _closeRequested;

    /// <summary>Completed once the instance is closed after <see cref="CloseWhenIdleAsync"/> asked for it.</summary>
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completed once the backend's Dispose has returned (or thrown).</summary>
    private readonly TaskCompletionSource _disposeReturned = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ModelInstance(int index, string id, IModelBackend backend, double? weight, int maxConcurrency, InstanceHealthOptions health, TimeProvider time)
    {
        Index = index;
        Id = id;
        Backend = backend;
        _configuredWeight = weight;
        MaxConcurrency = maxConcurrency;
        _health = health;
        _time = time;
        if (health.RunTimeout is not null)
        {
            _runStarts = new long[maxConcurrency];
        }
    }

    public int Index { get; }

    public string Id { get; }

    public IModelBackend Backend { get; }

    public int MaxConcurrency { get; }

    public int Outstanding => Math.Max(0, Volatile.Read(ref _outstanding));

    /// <summary>True once <see cref="TryClose"/> succeeded: the instance takes no more work and may be disposed.</summary>
    public bool IsClosed => Volatile.Read(ref _outstanding) < 0;

    public int OutstandingRows => Volatile.Read(ref _outstandingRows);

    /// <summary>The configured weight, else the measured throughput in rows per second (1 until measured).</summary>
    public double Weight => _configuredWeight ?? (Volatile.Read(ref _rowsPerSecond) is > 0 and var r ? r : 1.0);

    public double SmoothedLatencySeconds
    {
        get
        {
            lock (_statsGate)
            {
                return _peakEwmaSeconds;
            }
        }
    }

    /// <summary>True when the instance is in rotation (not taken out, or its back-off has passed).</summary>
    public bool IsAvailable(long now)
    {
        long until = Volatile.Read(ref _outUntilTimestamp);
        return until == 0 || now >= until;
    }

    public long OutUntilTimestamp => Volatile.Read(ref _outUntilTimestamp);

    /// <summary>The consecutive failures that took the instance out the last time (1 on probation after a back-off).</summary>
    public int TakenOutAfter { get; private set; }

    public bool TryReserve()
    {
        while (true)
        {
            int current = Volatile.Read(ref _outstanding);
            if (current >= MaxConcurrency || current < 0)
            {
                return false; // full, or closed for disposal
            }

            if (Interlocked.CompareExchange(ref _outstanding, current + 1, current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// Closes the instance when nothing runs on it: from then on every <see cref="TryReserve"/> fails, so it can be
    /// disposed safely (no batch, not even a retry of a batch that failed elsewhere, can start on it). False while a
    /// batch holds a reservation.
    /// </summary>
    public bool TryClose() => Interlocked.CompareExchange(ref _outstanding, Closed, 0) == 0 || IsClosed;

    /// <summary>
    /// Closes the instance as soon as nothing runs on it: at once when it is idle, else when the last reservation is
    /// released (by <see cref="Complete"/> or <see cref="Unreserve"/>, on the thread that releases it). The task completes
    /// once it is closed; reservations made meanwhile (a retry of a batch that failed elsewhere) are waited for too.
    /// </summary>
    public Task CloseWhenIdleAsync()
    {
        // The flag is written before the attempt (a full fence), and a release reads it after its decrement (a full fence):
        // either this attempt finds the instance idle, or the release that makes it idle sees the flag and closes it.
        _closeRequested = true;
        CloseIfRequested();
        return _closed.Task;
    }

    private void CloseIfRequested()
    {
        if (_closeRequested && TryClose())
        {
            _closed.TrySetResult();
        }
    }

    /// <summary>After a reservation was released: closes the instance when that was the last one and a close waits for it.</summary>
    private void Released(int remaining)
    {
        if (remaining == 0 && _closeRequested)
        {
            CloseIfRequested();
        }
    }

    public void AddRows(int rows) => Interlocked.Add(ref _outstandingRows, rows);

    /// <summary>
    /// Takes one more reservation on an instance the caller already holds one on (so it cannot be closed meanwhile), to
    /// keep running on it after that one is released; it may pass <see cref="MaxConcurrency"/> for that moment.
    /// </summary>
    public void ReserveAgain() => Interlocked.Increment(ref _outstanding);

    /// <summary>Releases a reservation that ran nothing.</summary>
    public void Unreserve() => Released(Interlocked.Decrement(ref _outstanding));

    /// <summary>
    /// Releases a reservation of <paramref name="rows"/> rows (see <see cref="AddRows"/>) whose run never started, or was
    /// stopped by its caller's cancellation: it leaves the instance's health, completed count, latency and throughput as
    /// they were, since it tells nothing of them.
    /// </summary>
    public void ReleaseUnrun(int rows) => Release(rows);

    /// <summary>Releases a reservation of <paramref name="rows"/> rows: the rows, then the slot (closing the instance if a close waits for it).</summary>
    private void Release(int rows)
    {
        Interlocked.Add(ref _outstandingRows, -rows);
        Unreserve();
    }

    /// <summary>
    /// Records that a run started at <paramref name="started"/>, for the stuck-run watchdog: one compare-and-swap on a free
    /// slot. Returns the slot to hand to <see cref="RunEnded"/>, or -1 when nothing is watched (no RunTimeout, or every
    /// slot taken, which a run within MaxConcurrency never finds).
    /// </summary>
    public int RunStarted(long started)
    {
        var slots = _runStarts;
        if (slots is null)
        {
            return -1;
        }

        long stamp = Math.Max(1, started);
        for (int i = 0; i < slots.Length; i++)
        {
            if (Volatile.Read(ref slots[i]) == 0 && Interlocked.CompareExchange(ref slots[i], stamp, 0) == 0)
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>
    /// Frees the slot <see cref="RunStarted"/> gave a run that has returned. True when the watchdog took the instance out
    /// for this run while it ran: its outcome then must not take the instance out again (see <see cref="Complete"/>).
    /// </summary>
    public bool RunEnded(int slot) => slot >= 0 && Interlocked.Exchange(ref _runStarts![slot], 0) < 0;

    /// <summary>
    /// The watchdog's check: when the instance is in rotation (or on probation after a back-off) and a run started more
    /// than <paramref name="limit"/> ticks before <paramref name="now"/> has not returned, takes the instance out with the
    /// usual back-off (doubling like a failure on probation), marks that run so that it does so once, and returns true
    /// with how long the run has been running. A run that returns meanwhile is accounted for by <see cref="Complete"/> instead.
    /// </summary>
    public bool TryTakeOutStuck(long now, long limit, out TimeSpan running)
    {
        running = default;
        var slots = _runStarts;
        if (slots is null || IsClosed)
        {
            return false;
        }

        lock (_statsGate)
        {
            long until = _outUntilTimestamp;
            if (until != 0 && now < until)
            {
                return false; // out already: its back-off stands
            }

            int oldest = -1;
            long oldestStart = 0;
            for (int i = 0; i < slots.Length; i++)
            {
                long start = Volatile.Read(ref slots[i]);
                if (start > 0 && now - start > limit && (oldest < 0 || start < oldestStart))
                {
                    oldest = i;
                    oldestStart = start;
                }
            }

            // Marked before the instance is taken out: a run that returned first freed its slot, and the exchange fails.
            if (oldest < 0 || Interlocked.CompareExchange(ref slots[oldest], -oldestStart, oldestStart) != oldestStart)
            {
                return false;
            }

            TakeOut(now, until);
            running = _time.GetElapsedTime(oldestStart, now);
            return true;
        }
    }

    /// <summary>Under <see cref="_statsGate"/>: out of rotation for the back-off, doubled for each time taken out since the last good run.</summary>
    private void TakeOut(long now, long until)
    {
        var backOff = _health.BackOff * Math.Pow(2, Math.Min(_timesTakenOut, 16));
        if (backOff > _health.MaxBackOff)
        {
            backOff = _health.MaxBackOff;
        }

        Volatile.Write(ref _outUntilTimestamp, now + (long)(backOff.TotalSeconds * _time.TimestampFrequency));
        _timesTakenOut++;
        TakenOutAfter = until != 0 ? 1 : _consecutiveFailures;
        _consecutiveFailures = 0;
    }

    /// <summary>
    /// Records the outcome of a run and releases its reservation. Returns true when this failure took the instance out.
    /// A <paramref name="slow"/> run (longer than RunTimeout) counts as a failure for health, but it ran and its batch was
    /// answered: it is counted as completed and its latency and throughput are recorded like any other. A run the
    /// watchdog already took the instance out for (<paramref name="takenOutWhileRunning"/>) counts once in the total
    /// failures, and changes neither the consecutive failures nor the rotation: that was its consequence already.
    /// </summary>
    public bool Complete(int rows, double seconds, bool failed, bool slow = false, bool takenOutWhileRunning = false)
    {
        long now = _time.GetTimestamp();
        bool takenOut = false;
        lock (_statsGate)
        {
            if (!failed)
            {
                _completed++;
                RecordLatency(seconds, now);
                if (seconds > 0 && rows > 0)
                {
                    double rate = rows / seconds;
                    _rowsPerSecond = _rowsPerSecond == 0 ? rate : (_rowsPerSecond * 0.9) + (rate * 0.1);
                }
            }

            if (failed || slow || takenOutWhileRunning)
            {
                _totalFailures++;
                long until = _outUntilTimestamp;
                if (takenOutWhileRunning)
                {
                    // Taken out by the watchdog for this very run: counted once, above.
                }
                else if (until != 0 && now < until)
                {
                    // Out of rotation already: a run that was in flight when the instance was taken out tells nothing new,
                    // and must neither take it out again nor lengthen its back-off.
                }
                else if (until != 0 || ++_consecutiveFailures >= _health.FailureThreshold)
                {
                    // The threshold reached, or the first failure on probation (back after its back-off, with no good run
                    // since): out again at once, for twice as long, rather than after FailureThreshold more failed batches.
                    TakeOut(now, until);
                    takenOut = true;
                }
            }
            else
            {
                _consecutiveFailures = 0;
                if (_outUntilTimestamp != 0 && now >= _outUntilTimestamp)
                {
                    // A good run after the back-off: fully back in rotation.
                    Volatile.Write(ref _outUntilTimestamp, 0);
                    _timesTakenOut = 0;
                }
            }
        }

        Release(rows);
        return takenOut;
    }

    /// <summary>The learned throughput in rows per second; 0 when the weight is configured or not measured yet.</summary>
    public double LearnedRate => _configuredWeight is null ? Volatile.Read(ref _rowsPerSecond) : 0;

    /// <summary>
    /// The load a strategy sees. A learned weight not measured yet is <paramref name="unmeasuredWeight"/> (the pool's best
    /// measured rate): the placeholder 1 beside rates in rows per second would make the instance look so slow that a
    /// weighted strategy never tries it, so it would never be measured either.
    /// </summary>
    public InstanceLoad Snapshot(double unmeasuredWeight) => new()
    {
        Index = Index,
        Outstanding = Outstanding,
        OutstandingRows = OutstandingRows,
        MaxConcurrency = MaxConcurrency,
        Weight = _configuredWeight ?? (LearnedRate is > 0 and var r ? r : unmeasuredWeight),
        SmoothedLatencySeconds = SmoothedLatencySeconds,
        Completed = Volatile.Read(ref _completed),
    };

    public ModelInstanceInfo ToInfo()
    {
        long until = OutUntilTimestamp;
        DateTimeOffset? outUntil = null;
        if (until != 0)
        {
            var remaining = _time.GetElapsedTime(_time.GetTimestamp(), until);
            outUntil = _time.GetUtcNow() + remaining;
        }

        lock (_statsGate)
        {
            return new ModelInstanceInfo(Id, Backend.Provider, Weight, MaxConcurrency, Outstanding, OutstandingRows,
                TimeSpan.FromSeconds(_peakEwmaSeconds), _consecutiveFailures, _totalFailures, outUntil, _completed);
        }
    }

    /// <summary>
    /// Completes once the backend's Dispose has returned or thrown: the moment an unload that gives up at its drain timeout
    /// reads to tell whether the instance is still being disposed.
    /// </summary>
    public Task DisposeReturned => _disposeReturned.Task;

    /// <summary>Disposes the backend once: a second call (the pool's and an unload's, say) does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            try
            {
                Backend.Dispose();
            }
            finally
            {
                _disposeReturned.TrySetResult();
            }
        }
    }

    private void RecordLatency(double seconds, long now)
    {
        // Peak EWMA: a slower sample takes effect at once; faster samples pull it down with a time-based decay.
        if (_lastSampleTimestamp == 0 || seconds > _peakEwmaSeconds)
        {
            _peakEwmaSeconds = seconds;
        }
        else
        {
            double elapsed = Math.Max(0, (now - _lastSampleTimestamp) / (double)_time.TimestampFrequency);
            double w = Math.Exp(-elapsed / LatencyDecaySeconds);
            _peakEwmaSeconds = (_peakEwmaSeconds * w) + (seconds * (1 - w));
        }

        _lastSampleTimestamp = now;
    }
}

/// <summary>The instances of one model version and the strategy that chooses among them.</summary>
internal sealed class InstancePool : IDisposable
{
    private readonly IInstanceSelector _selector;
    private readonly TimeProvider _time;
    private readonly string _model;
    private readonly string _strategy;
    private readonly ILogger _logger;
    private long _selectorFailures;

    public InstancePool(ModelInstance[] instances, IInstanceSelector selector, TimeProvider time, string model, string strategy, ILogger logger)
    {
        Instances = instances;
        _selector = selector;
        _time = time;
        _model = model;
        _strategy = strategy;
        _logger = SafeLogger.Wrap(logger);
        foreach (var i in instances)
        {
            TotalConcurrency += i.MaxConcurrency;
        }
    }

    public ModelInstance[] Instances { get; }

    public int TotalConcurrency { get; }

    /// <summary>
    /// Reserves room on the instance the strategy picks among those in rotation. False when none has room, or when
    /// the strategy prefers to wait for a busy instance (its completion dispatches again).
    /// </summary>
    public bool TryAcquire(out ModelInstance instance, ModelInstance? exclude = null)
    {
        var all = Instances;
        long now = _time.GetTimestamp();
        Span<InstanceLoad> candidates = all.Length <= 64 ? stackalloc InstanceLoad[all.Length] : new InstanceLoad[all.Length];
        double unmeasured = 0;
        foreach (var inst in all)
        {
            unmeasured = Math.Max(unmeasured, inst.LearnedRate);
        }

        if (unmeasured <= 0)
        {
            unmeasured = 1.0;
        }

        for (int attempt = 0; attempt < 4; attempt++)
        {
            int n = 0;
            int withRoom = -1;
            foreach (var inst in all)
            {
                if (inst != exclude && inst.IsAvailable(now))
                {
                    var load = inst.Snapshot(unmeasured);
                    if (load.HasRoom)
                    {
                        withRoom = n;
                    }

                    candidates[n++] = load;
                }
            }

            if (withRoom < 0)
            {
                break;
            }

            int pick = n == 1 ? 0 : Pick(candidates[..n]);
            if (!candidates[pick].HasRoom)
            {
                break; // the strategy waits for a busy instance
            }

            var chosen = all[candidates[pick].Index];
            if (chosen.TryReserve())
            {
                instance = chosen;
                return true;
            }
        }

        instance = null!;
        return false;
    }

    /// <summary>
    /// The strategy's choice among <paramref name="candidates"/> (at least one has room). The strategy is user code that
    /// runs wherever a batch forms, a timer callback or a pool work item included: when it throws or answers a position
    /// out of range, the least-loaded candidate with room is chosen instead, and the failure is logged (the 1st, 2nd,
    /// 4th, 8th... time, so a strategy that always fails cannot flood the log).
    /// </summary>
    private int Pick(ReadOnlySpan<InstanceLoad> candidates)
    {
        Exception? error = null;
        int pick;
        try
        {
            pick = _selector.Pick(candidates);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            error = ex;
            pick = -1;
        }

        if (error is null && (uint)pick < (uint)candidates.Length)
        {
            return pick;
        }

        error ??= new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Load-balancing strategy '{_strategy}' returned {pick} for {candidates.Length} candidates; expected 0 to {candidates.Length - 1}."));
        long failures = Interlocked.Increment(ref _selectorFailures);
        if ((failures & (failures - 1)) == 0)
        {
            Log.StrategyFailed(_logger, _model, _strategy, failures, error);
        }

        int best = -1;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (candidates[i].HasRoom && (best < 0 || candidates[i].Outstanding < candidates[best].Outstanding))
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Reserves room on any instance in rotation other than <paramref name="exclude"/>, least loaded first (used to retry a failed batch).</summary>
    public bool TryAcquireAny(ModelInstance exclude, out ModelInstance instance)
    {
        long now = _time.GetTimestamp();
        foreach (var inst in Instances.Where(i => i != exclude && i.IsAvailable(now)).OrderBy(static i => i.Outstanding))
        {
            if (inst.TryReserve())
            {
                instance = inst;
                return true;
            }
        }

        instance = null!;
        return false;
    }

    /// <summary>True when at least one instance is in rotation now.</summary>
    public bool AnyAvailable() => AnyAvailable(_time.GetTimestamp());

    /// <summary>True when at least one instance is in rotation at <paramref name="now"/> (a timestamp the caller already read).</summary>
    public bool AnyAvailable(long now)
    {
        foreach (var inst in Instances)
        {
            if (inst.IsAvailable(now))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The timestamp at which the first taken-out instance returns, or 0.</summary>
    public long EarliestReturn()
    {
        long best = 0;
        foreach (var inst in Instances)
        {
            long until = inst.OutUntilTimestamp;
            if (until != 0 && (best == 0 || until < best))
            {
                best = until;
            }
        }

        return best;
    }

    /// <summary>Concurrency of the instances in rotation now.</summary>
    public int AvailableConcurrency() => AvailableConcurrency(_time.GetTimestamp());

    /// <summary>Concurrency of the instances in rotation at <paramref name="now"/> (a timestamp the caller already read).</summary>
    public int AvailableConcurrency(long now)
    {
        int total = 0;
        foreach (var inst in Instances)
        {
            if (inst.IsAvailable(now))
            {
                total += inst.MaxConcurrency;
            }
        }

        return total;
    }

    public void Dispose()
    {
        foreach (var inst in Instances)
        {
            inst.Dispose();
        }
    }
}
