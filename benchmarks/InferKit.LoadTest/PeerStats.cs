using System.Diagnostics;
using System.Runtime.InteropServices;

namespace InferKit.LoadTest;

/// <summary>Counters of one peer in one scenario, accumulated over every slice it ran. Thread-safe and allocation-free.</summary>
internal sealed class PeerStats
{
    private PaddedCounter _ok;
    private PaddedCounter _rows;
    private PaddedCounter _errors;
    private PaddedCounter _refused;
    private PaddedCounter _expired;
    private PaddedCounter _late;
    private PaddedCounter _lateMaxTicks;
    private PaddedCounter _lateAfterRead;
    private PaddedCounter _lateAfterReadMaxTicks;
    private PaddedCounter _lateFromArrival;
    private PaddedCounter _wrong;
    private PaddedCounter _serverLate;
    private PaddedCounter _batchRows;
    private PaddedCounter _activeTicks;
    private string? _firstError;

    public PeerStats(string scenario, string peer, int callers, double rate)
    {
        Scenario = scenario;
        Peer = peer;
        Callers = callers;
        Rate = rate;
    }

    public string Scenario { get; }

    public string Peer { get; }

    public int Callers { get; }

    public double Rate { get; set; }

    /// <summary>Latency of successful answers.</summary>
    public LatencyHistogram Latency { get; } = new();

    /// <summary>Latency of refusals (open loop).</summary>
    public LatencyHistogram RefusalLatency { get; } = new();

    /// <summary>Time from an arrival to the InferAsync call (open loop: thread-pool dispatch of the generator's work item).</summary>
    public LatencyHistogram DispatchLag { get; } = new();

    public long Ok => Interlocked.Read(ref _ok.Value);

    public long Rows => Interlocked.Read(ref _rows.Value);

    public long Errors => Interlocked.Read(ref _errors.Value) + Interlocked.Read(ref _wrong.Value);

    public long WrongOutputs => Interlocked.Read(ref _wrong.Value);

    public long Refused => Interlocked.Read(ref _refused.Value);

    /// <summary>Answered with DeadlineExceeded by the server, or dropped unrun because the deadline had passed.</summary>
    public long Expired => Interlocked.Read(ref _expired.Value);

    /// <summary>Successful answers that reached the caller after the deadline, counted from the InferAsync call.</summary>
    public long Late => Interlocked.Read(ref _late.Value);

    /// <summary>Successful answers that reached the caller after the deadline, counted from the arrival.</summary>
    public long LateFromArrival => Interlocked.Read(ref _lateFromArrival.Value);

    /// <summary>Open loop: successful answers within the deadline counted from the arrival.</summary>
    public long InDeadline => Ok - LateFromArrival;

    /// <summary>Open loop: how late the generator fired arrivals (it sleeps in 1 ms steps and fires what is due).</summary>
    public LatencyHistogram GeneratorLag { get; } = new();

    /// <summary>
    /// Open loop, InferKit: from the end of the batch that answered a request (its QueueTime + ComputeTime after the
    /// call) to the moment the caller's continuation ran: the thread-pool hop of the completion.
    /// </summary>
    public LatencyHistogram DeliveryLag { get; } = new();

    /// <summary>Open loop, InferKit: successes whose batch ended after the deadline (QueueTime + ComputeTime &gt; deadline).</summary>
    public long ServerLate => Interlocked.Read(ref _serverLate.Value);

    public void ServerLateAnswer() => Interlocked.Increment(ref _serverLate.Value);

    public string? FirstError => Volatile.Read(ref _firstError);

    public double Seconds => Interlocked.Read(ref _activeTicks.Value) / (double)Stopwatch.Frequency;

    /// <summary>Mean rows per server batch, as reported by the responses (InferKit only).</summary>
    public double MeanBatch => Ok == 0 ? double.NaN : Interlocked.Read(ref _batchRows.Value) / (double)Ok;

    public double ThroughputPerSecond => Seconds <= 0 ? 0 : Rows / Seconds;

    public double? GoodputPerSecond { get; set; }

    public double? HeapBeforeMb { get; set; }

    public double? HeapAfterMb { get; set; }

    public double? HeapPeakMb { get; set; }

    public double? WorkingSetBeforeMb { get; set; }

    public double? WorkingSetAfterMb { get; set; }

    public int? BatchSize { get; set; }

    public string? Note { get; set; }

    /// <summary>Free-form extra values for the JSON rows and the notes.</summary>
    public Dictionary<string, double> Extra { get; } = new(StringComparer.Ordinal);

    public void Success(long latencyTicks, int rows = 1, int batchSize = 0)
    {
        Latency.Record(latencyTicks);
        Interlocked.Increment(ref _ok.Value);
        Interlocked.Add(ref _rows.Value, rows);
        if (batchSize > 0)
        {
            Interlocked.Add(ref _batchRows.Value, batchSize);
        }
    }

    public void Refusal(long latencyTicks)
    {
        RefusalLatency.Record(latencyTicks);
        Interlocked.Increment(ref _refused.Value);
    }

    public void Expiry() => Interlocked.Increment(ref _expired.Value);

    public void LateAnswer(long ticksLate)
    {
        Interlocked.Increment(ref _late.Value);
        LatencyHistogram.RaiseTo(ref _lateMaxTicks.Value, ticksLate);
    }

    /// <summary>How far past the deadline the latest late answer was seen, in ms.</summary>
    public double LateMaxMs => Interlocked.Read(ref _lateMaxTicks.Value) * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    /// <summary>Successes taken before the deadline whose caller read its clock only after it (its thread was descheduled in between).</summary>
    public long LateAfterRead => Interlocked.Read(ref _lateAfterRead.Value);

    /// <summary>How far past the deadline the latest late-after-read answer was seen, in ms.</summary>
    public double LateAfterReadMaxMs => Interlocked.Read(ref _lateAfterReadMaxTicks.Value) * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    public void LateAfterReadAnswer(long ticksLate)
    {
        Interlocked.Increment(ref _lateAfterRead.Value);
        LatencyHistogram.RaiseTo(ref _lateAfterReadMaxTicks.Value, ticksLate);
    }

    public void LateFromArrivalAnswer() => Interlocked.Increment(ref _lateFromArrival.Value);

    public void WrongOutput() => Interlocked.Increment(ref _wrong.Value);

    public void Error(Exception error)
    {
        Interlocked.Increment(ref _errors.Value);
        Interlocked.CompareExchange(ref _firstError, $"{error.GetType().Name}: {error.Message}", null);
    }

    public void Error(string message)
    {
        Interlocked.Increment(ref _errors.Value);
        Interlocked.CompareExchange(ref _firstError, message, null);
    }

    public void AddActive(long ticks) => Interlocked.Add(ref _activeTicks.Value, ticks);
}

/// <summary>
/// A counter on cache lines of its own. The generator's thread counts arrivals and refusals while the threads that
/// finish batches count answers; counters packed side by side would bounce one cache line between the cores on every
/// count, a cost the generator would add to the peer under test.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct PaddedCounter
{
    [FieldOffset(64)]
    public long Value;
}
