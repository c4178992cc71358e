using System.Collections.Concurrent;
using System.Diagnostics;
using InferKit.TestModels;
using InferKit.Tensors;
using Microsoft.ML.OnnxRuntime;

namespace InferKit.LoadTest;

/// <summary>What one open-loop run shares with the requests it fires.</summary>
internal sealed class OpenLoopContext(PeerStats stats, Workload workload, TimeSpan deadline)
{
    private PaddedCounter _started;
    private PaddedCounter _ended;

    public PeerStats Stats { get; } = stats;

    public Workload Workload { get; } = workload;

    public TimeSpan Deadline { get; } = deadline;

    public long DeadlineTicks { get; } = (long)(deadline.TotalSeconds * Stopwatch.Frequency);

    /// <summary>Arrivals started and not yet ended.</summary>
    public long Outstanding => Interlocked.Read(ref _started.Value) - Interlocked.Read(ref _ended.Value);

    /// <summary>Counts an arrival (on a cache line of its own, apart from the one the threads that end requests write).</summary>
    public void Begin() => Interlocked.Increment(ref _started.Value);

    public void End() => Interlocked.Increment(ref _ended.Value);

    /// <summary>
    /// Counts a successful answer: latency from the arrival; late against the deadline from the arrival and from the
    /// call. <paramref name="handed"/> is the generator's clock read just before it took the result from the peer (the
    /// delivery): a success taken after the deadline is late. <paramref name="now"/> is read after it returned; past the
    /// deadline only by then, the answer counts as late-after-read (the caller's own thread was descheduled in between).
    /// <paramref name="batchSize"/> is the rows of the run that answered it (for the table's mean batch).
    /// </summary>
    public void Answered(long arrival, long call, long handed, long now, int batchSize)
    {
        Stats.Success(now - arrival, 1, batchSize);
        if (now - arrival > DeadlineTicks)
        {
            Stats.LateFromArrivalAnswer();
        }

        if (handed - call > DeadlineTicks)
        {
            Stats.LateAnswer(handed - call - DeadlineTicks);
        }
        else if (now - call > DeadlineTicks)
        {
            Stats.LateAfterReadAnswer(now - call - DeadlineTicks);
        }
    }
}

/// <summary>A peer that takes independent arrivals.</summary>
internal interface IOpenLoopPeer
{
    string Name { get; }

    /// <summary>Starts one request that arrived at <paramref name="arrival"/>; calls <see cref="OpenLoopContext.End"/> when it is answered.</summary>
    void Fire(OpenLoopContext context, long arrival);

    /// <summary>The generator's own per-arrival objects created so far (each outstanding arrival holds one).</summary>
    int CallsCreated { get; }

    /// <summary>Creates pooled per-arrival objects up to <paramref name="count"/>, so that the pool's growth is not counted as the peer's memory.</summary>
    void Reserve(int count);

    /// <summary>
    /// Drops the pooled per-arrival objects created beyond the reserve (arrivals that waited in the thread pool longer
    /// than the reserve covers), so that the memory measured after a run is the peer's, not the generator's backlog.
    /// </summary>
    void TrimToReserve();

    /// <summary>Called once every generator thread of a run has stopped firing.</summary>
    void GeneratorsDone();
}

/// <summary>
/// Open loop: Poisson arrivals at a set rate for a set time, each started by the peer (on the generator's thread or as
/// its own thread-pool work item, <see cref="Arrivals"/>), whatever the state of earlier ones. Waits for every request
/// to end.
/// </summary>
internal static class OpenLoop
{
    public static void Run(IOpenLoopPeer peer, double rate, TimeSpan duration, OpenLoopContext context, int seed, bool measureBefore, bool measureAfter, int generators = 1)
    {
        var stats = context.Stats;
        if (measureBefore)
        {
            var (heap, ws) = Memory();
            stats.HeapBeforeMb = heap;
            stats.WorkingSetBeforeMb = ws;
        }

        double peak = 0;
        using var sampler = new Timer(_ => peak = Math.Max(peak, GC.GetTotalMemory(false) / 1048576.0), null, 0, 100);
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = start + (long)(duration.TotalSeconds * freq);

        // Each generator thread fires its own Poisson stream at rate / generators (together a Poisson stream at the rate):
        // one thread sharing the cores with the server can fall behind a rate the server's admission keeps up with.
        long fired = 0;
        if (generators <= 1)
        {
            fired = Generate(peer, rate, context, new Random(seed), start, end);
        }
        else
        {
            var threads = new Thread[generators];
            for (int g = 0; g < generators; g++)
            {
                var rng = new Random(seed * 7919 + g);
                threads[g] = new Thread(() =>
                {
                    long n = Generate(peer, rate / generators, context, rng, start, end);
                    Interlocked.Add(ref fired, n);
                })
                {
                    IsBackground = true,
                    Name = $"open-loop generator {g}",
                };
                threads[g].Start();
            }

            foreach (var thread in threads)
            {
                thread.Join();
            }
        }

        peer.GeneratorsDone();

        // What was offered: a generator that cannot keep up fires every scheduled arrival late, over a longer time, so
        // the rate it reached is below the one asked for.
        stats.Extra["fired"] = stats.Extra.GetValueOrDefault("fired") + fired;
        stats.Extra["generation_s"] = stats.Extra.GetValueOrDefault("generation_s") + ((Stopwatch.GetTimestamp() - start) / (double)freq);

        long drainLimit = Stopwatch.GetTimestamp() + (30 * freq);
        while (context.Outstanding > 0 && Stopwatch.GetTimestamp() < drainLimit)
        {
            Thread.Sleep(2);
        }

        stats.AddActive(Stopwatch.GetTimestamp() - start);
        if (context.Outstanding > 0)
        {
            stats.Error($"{context.Outstanding} requests still unanswered 30 s after the last arrival.");
        }

        stats.HeapPeakMb = Math.Max(stats.HeapPeakMb ?? 0, peak);
        if (measureAfter)
        {
            peer.TrimToReserve();
            var (heap, ws) = Memory();
            stats.HeapAfterMb = heap;
            stats.WorkingSetAfterMb = ws;
        }
    }

    /// <summary>Fires Poisson arrivals at <paramref name="rate"/> from <paramref name="start"/> until <paramref name="end"/>; returns how many.</summary>
    private static long Generate(IOpenLoopPeer peer, double rate, OpenLoopContext context, Random rng, long start, long end)
    {
        long freq = Stopwatch.Frequency;
        double t = 0;
        long fired = 0;
        while (true)
        {
            t += -Math.Log(1.0 - rng.NextDouble()) / rate;
            long due = start + (long)(t * freq);
            if (due >= end)
            {
                return fired;
            }

            long now = Stopwatch.GetTimestamp();
            while (due > now)
            {
                Thread.Sleep(1);
                now = Stopwatch.GetTimestamp();
            }

            context.Stats.GeneratorLag.Record(now - due);
            context.Begin();
            peer.Fire(context, now);
            fired++;
        }
    }

    /// <summary>Drops pooled objects beyond <paramref name="keep"/>.</summary>
    public static void Trim<T>(ConcurrentQueue<T> pool, int keep)
    {
        while (pool.Count > keep && pool.TryDequeue(out _))
        {
        }
    }

    /// <summary>Live managed heap (bytes that survived a full blocking collection) and the process working set, in MB.</summary>
    public static (double HeapMb, double WorkingSetMb) Memory()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        var info = GC.GetGCMemoryInfo(GCKind.FullBlocking);
        return (info.PromotedBytes / 1048576.0, Environment.WorkingSet / 1048576.0);
    }
}

/// <summary>How the open-loop generator starts an arrival.</summary>
internal enum Arrivals
{
    /// <summary>
    /// The generator's thread calls the peer's asynchronous entry point itself and goes on; the answer is taken where
    /// it completes. The generator then costs the machine little beyond the arrivals themselves, as when the callers
    /// are on other machines. Only for peers with an asynchronous entry point (InferKit); the naive peer blocks, so it
    /// always gets <see cref="Pool"/>.
    /// </summary>
    Direct,

    /// <summary>Each arrival is its own thread-pool work item, as a server's requests arrive on pool threads: a hop per arrival on the same cores.</summary>
    Pool,
}

/// <summary>
/// InferKit in the open loop: each arrival calls InferAsync with an absolute deadline 50 ms (configurable) after the
/// call, from the generator's thread (<see cref="Arrivals.Direct"/>) or from a pool work item of its own.
/// </summary>
internal sealed class InferKitOpenLoop(InferKitPeer peer, Arrivals arrivals) : IOpenLoopPeer, IDisposable
{
    private readonly ConcurrentQueue<Call> _pool = new();

    // Direct arrivals answered at once (refusals) come back on the generator thread that fired them: reused last in,
    // first out, so the few slots they cycle through stay in cache. Through the shared queue every arrival would take
    // the slot used longest ago, a cold object among tens of thousands. One stack per generator thread, emptied into
    // the shared queue when the generators stop (their threads end with the run).
    private readonly ThreadLocal<Stack<Call>> _hot = new(() => new Stack<Call>(), trackAllValues: true);
    private int _created;
    private int _reserved;

    public string Name => peer.Name;

    public void Fire(OpenLoopContext context, long arrival)
    {
        if (!_hot.Value!.TryPop(out var call) && !_pool.TryDequeue(out call))
        {
            call = new Call(this, context.Workload, Interlocked.Increment(ref _created));
        }

        call.Start(context, arrival);
    }

    public int CallsCreated => Volatile.Read(ref _created);

    public void Reserve(int count)
    {
        var workload = peer.Workload;
        _reserved = Math.Max(_reserved, count);
        while (Volatile.Read(ref _created) < count)
        {
            _pool.Enqueue(new Call(this, workload, Interlocked.Increment(ref _created)));
        }
    }

    public void TrimToReserve() => OpenLoop.Trim(_pool, _reserved);

    public void Dispose() => _hot.Dispose();

    public void GeneratorsDone()
    {
        foreach (var stack in _hot.Values)
        {
            while (stack.TryPop(out var call))
            {
                _pool.Enqueue(call);
            }
        }
    }

    /// <summary>
    /// One reusable request slot: its own input row and input array. Each arrival gets a new request object carrying an
    /// absolute deadline taken when the generator calls <c>InferAsync</c>, so InferKit's deadline is the caller's even
    /// when the calling thread is preempted before InferKit reads its clock.
    /// </summary>
    private sealed class Call : IThreadPoolWorkItem
    {
        private readonly InferKitOpenLoop _owner;
        private readonly int _id;
        private readonly Action _onCompleted;
        private readonly Tensor[] _inputs;
        private OpenLoopContext _context = null!;
        private ValueTask<InferenceResponse> _pending;
        private long _arrival;
        private long _call;
        private bool _synchronous;

        public Call(InferKitOpenLoop owner, Workload workload, int id)
        {
            _owner = owner;
            _id = id;
            _onCompleted = OnCompleted;
            Data = workload.Input(id);
            _inputs = [Tensor.Create(MlpModel.InputName, Data, 1, Data.Length)];
        }

        private float[] Data { get; }

        public void Start(OpenLoopContext context, long arrival)
        {
            _context = context;
            _arrival = arrival;
            if (_owner.Mode == Arrivals.Direct)
            {
                Execute();
            }
            else
            {
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            }
        }

        public void Execute()
        {
            // The wall clock first, then the call time: a pause in between (a GC, a preemption) can only make the deadline
            // InferKit gets earlier than the one the generator checks against, never later.
            var utc = DateTimeOffset.UtcNow;
            _call = Stopwatch.GetTimestamp();
            var request = new InferenceRequest(_inputs) { Deadline = utc + _context.Deadline, AllowSynchronousContinuation = _owner.Peer.SynchronousContinuations };
            _context.Stats.DispatchLag.Record(_call - _arrival);
            try
            {
                // Kept in a field and consumed exactly once, by OnCompleted: an allocation-free open-loop await.
#pragma warning disable CA2012
                _pending = _owner.Peer.Client.InferAsync(Workload.ModelName, request);
#pragma warning restore CA2012
            }
#pragma warning disable CA1031 // A load generator counts every failure and goes on.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                _context.Stats.Error(ex);
                Finish();
                return;
            }

            if (_pending.IsCompleted)
            {
                _synchronous = _owner.Mode == Arrivals.Direct; // answered on the generator's thread
                OnCompleted();
            }
            else
            {
                _pending.GetAwaiter().UnsafeOnCompleted(_onCompleted);
            }
        }

        private void OnCompleted()
        {
            var context = _context;
            var stats = context.Stats;
            InferenceResponse response;
            long handed = Stopwatch.GetTimestamp();
            try
            {
                response = _pending.GetAwaiter().GetResult();
            }
#pragma warning disable CA1031
            catch (Exception ex)
#pragma warning restore CA1031
            {
                stats.Error(ex);
                Finish();
                return;
            }
            finally
            {
                _pending = default;
            }

            long now = Stopwatch.GetTimestamp();
            using (response)
            {
                switch (response.Status)
                {
                    case InferenceStatus.Success:
                        if (context.Workload.Matches(_id, response[MlpModel.ProbabilitiesName].GetSpan<float>()))
                        {
                            context.Answered(_arrival, _call, handed, now, response.BatchSize);
                            long server = (long)((response.QueueTime + response.ComputeTime).TotalSeconds * Stopwatch.Frequency);
                            stats.DeliveryLag.Record(now - _call - server);
                            if (server > context.DeadlineTicks)
                            {
                                stats.ServerLateAnswer();
                            }
                        }
                        else
                        {
                            stats.WrongOutput();
                        }

                        break;
                    case InferenceStatus.Refused:
                        stats.Refusal(now - _call);
                        break;
                    default:
                        stats.Expiry();
                        break;
                }
            }

            Finish();
        }

        private void Finish()
        {
            var context = _context;
            _context = null!;
            if (_synchronous)
            {
                _synchronous = false;
                _owner._hot.Value!.Push(this);
            }
            else
            {
                _owner._pool.Enqueue(this);
            }

            context.End();
        }
    }

    private InferKitPeer Peer => peer;

    private Arrivals Mode => arrivals;
}

/// <summary>
/// The naive host in the open loop: each arrival is a pool work item that calls session.Run on its own row. No
/// admission control; it does skip a request whose deadline passed while it waited (as a cancelled token would),
/// so the backlog drains after the run.
/// </summary>
internal sealed class NaiveOpenLoop(Workload workload) : IOpenLoopPeer
{
    private readonly ConcurrentQueue<Call> _pool = new();
    private int _created;
    private int _reserved;

    public string Name => "naive";

    public void Fire(OpenLoopContext context, long arrival)
    {
        if (!_pool.TryDequeue(out var call))
        {
            call = new Call(this, Interlocked.Increment(ref _created));
        }

        call.Start(context, arrival);
    }

    public int CallsCreated => Volatile.Read(ref _created);

    public void Reserve(int count)
    {
        _reserved = Math.Max(_reserved, count);
        while (Volatile.Read(ref _created) < count)
        {
            _pool.Enqueue(new Call(this, Interlocked.Increment(ref _created)));
        }
    }

    public void TrimToReserve() => OpenLoop.Trim(_pool, _reserved);

    public void GeneratorsDone()
    {
    }

    private sealed class Call(NaiveOpenLoop owner, int id) : IThreadPoolWorkItem
    {
        private readonly float[] _result = new float[owner.Workload.Classes];
        private readonly long[] _shape = [1, owner.Workload.InputSize];
        [ThreadStatic]
        private static RunOptions? t_runOptions;
        private OpenLoopContext _context = null!;
        private long _arrival;

        public void Start(OpenLoopContext context, long arrival)
        {
            _context = context;
            _arrival = arrival;
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }

        public void Execute()
        {
            var context = _context;
            long start = Stopwatch.GetTimestamp();
            context.Stats.DispatchLag.Record(start - _arrival);
            if (start - _arrival > context.DeadlineTicks)
            {
                context.Stats.Expiry();
            }
            else if (NaivePeer.RunOne(owner.Workload.RawSession, t_runOptions ??= new RunOptions(), owner.Workload.Input(id), _shape, _result, context.Stats))
            {
                long now = Stopwatch.GetTimestamp();
                if (owner.Workload.Matches(id, _result))
                {
                    context.Answered(_arrival, start, now, now, batchSize: 1);
                }
                else
                {
                    context.Stats.WrongOutput();
                }
            }

            _context = null!;
            owner._pool.Enqueue(this);
            context.End();
        }
    }

    private Workload Workload => workload;
}
