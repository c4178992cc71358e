using System.Diagnostics;

namespace InferKit.LoadTest;

/// <summary>Counters of one peer in one scenario, accumulated over every slice it ran. Thread-safe and allocation-free.</summary>
internal sealed class PeerStats
{
    private long _ok;
    private long _rows;
    private long _errors;
    private long _refused;
    private long _expired;
    private long _late;
    private long _lateMaxTicks;
    private long _lateAfterRead;
    private long _lateAfterReadMaxTicks;
    private long _lateFromArrival;
    private long _wrong;
    private long _serverLate;
    private long _batchRows;
    private long _activeTicks;
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

    public long Ok => Interlocked.Read(ref _ok);

    public long Rows => Interlocked.Read(ref _rows);

    public long Errors => Interlocked.Read(ref _errors) + Interlocked.Read(ref _wrong);

    public long WrongOutputs => Interlocked.Read(ref _wrong);

    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Answered with DeadlineExceeded by the server, or dropped unrun because the deadline had passed.</summary>
    public long Expired => Interlocked.Read(ref _expired);

    /// <summary>Successful answers that reached the caller after the deadline, counted from the InferAsync call.</summary>
    public long Late => Interlocked.Read(ref _late);

    /// <summary>Successful answers that reached the caller after the deadline, counted from the arrival.</summary>
    public long LateFromArrival => Interlocked.Read(ref _lateFromArrival);

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
    public long ServerLate => Interlocked.Read(ref _serverLate);

    public void ServerLateAnswer() => Interlocked.Increment(ref _serverLate);

    public string? FirstError => Volatile.Read(ref _firstError);

    public double Seconds => Interlocked.Read(ref _activeTicks) / (double)Stopwatch.Frequency;

    /// <summary>Mean rows per server batch, as reported by the responses (InferKit only).</summary>
    public double MeanBatch => Ok == 0 ? double.NaN : Interlocked.Read(ref _batchRows) / (double)Ok;

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
        Interlocked.Increment(ref _ok);
        Interlocked.Add(ref _rows, rows);
        if (batchSize > 0)
        {
            Interlocked.Add(ref _batchRows, batchSize);
        }
    }

    public void Refusal(long latencyTicks)
    {
        RefusalLatency.Record(latencyTicks);
        Interlocked.Increment(ref _refused);
    }

    public void Expiry() => Interlocked.Increment(ref _expired);

    public void LateAnswer(long ticksLate)
    {
        Interlocked.Increment(ref _late);
        LatencyHistogram.RaiseTo(ref _lateMaxTicks, ticksLate);
    }

    /// <summary>How far past the deadline the latest late answer was seen, in ms.</summary>
    public double LateMaxMs => Interlocked.Read(ref _lateMaxTicks) * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    /// <summary>Successes taken before the deadline whose caller read its clock only after it (its thread was descheduled in between).</summary>
    public long LateAfterRead => Interlocked.Read(ref _lateAfterRead);

    /// <summary>How far past the deadline the latest late-after-read answer was seen, in ms.</summary>
    public double LateAfterReadMaxMs => Interlocked.Read(ref _lateAfterReadMaxTicks) * 1000.0 / System.Diagnostics.Stopwatch.Frequency;

    public void LateAfterReadAnswer(long ticksLate)
    {
        Interlocked.Increment(ref _lateAfterRead);
        LatencyHistogram.RaiseTo(ref _lateAfterReadMaxTicks, ticksLate);
    }

    public void LateFromArrivalAnswer() => Interlocked.Increment(ref _lateFromArrival);

    public void WrongOutput() => Interlocked.Increment(ref _wrong);

    public void Error(Exception error)
    {
        Interlocked.Increment(ref _errors);
        Interlocked.CompareExchange(ref _firstError, $"{error.GetType().Name}: {error.Message}", null);
    }

    public void Error(string message)
    {
        Interlocked.Increment(ref _errors);
        Interlocked.CompareExchange(ref _firstError, message, null);
    }

    public void AddActive(long ticks) => Interlocked.Add(ref _activeTicks, ticks);
}
