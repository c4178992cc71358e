using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;

namespace InferKit.LoadTest;

/// <summary>A peer that can run closed-loop callers for a while.</summary>
internal interface IClosedLoopPeer
{
    string Name { get; }

    /// <summary>Runs the callers for <paramref name="duration"/> and records into <paramref name="stats"/>; returns the wall time used.</summary>
    void Run(int callers, TimeSpan duration, PeerStats stats);
}

/// <summary>
/// The ceiling: raw ONNX Runtime on a pre-created input of the best batch size, a reused RunOptions, in the better of two
/// layouts (found by trying both with a few batch sizes): one caller thread on one session with ONNX Runtime's default
/// intra-op threads, or one caller thread per core, each on its own single-threaded session. ONNX Runtime's default
/// counts physical cores, so on a machine whose logical processors share a core it runs one thread and leaves the other
/// processors idle; the second layout uses them all. The most rows per second this CPU gives this model.
/// </summary>
internal sealed class CeilingPeer : IClosedLoopPeer, IDisposable
{
    private readonly Workload _workload;
    private readonly Dictionary<int, OrtValue> _inputs = new();
    private readonly List<float[]> _buffers = new();

    // One single-threaded session per caller thread, for the parallel layout (created when first tried).
    private InferenceSession[] _parallel = [];

    /// <summary>The ceiling at the best batch size and layout <see cref="Calibrate"/> finds, or (<paramref name="fixedBatch"/>) at one set size with <paramref name="threads"/> caller threads.</summary>
    public CeilingPeer(Workload workload, int? fixedBatch = null, int threads = 1)
    {
        _workload = workload;
        BatchSize = fixedBatch ?? 1;
        Threads = threads;
        Name = fixedBatch is int b ? $"ceiling-{b}" : "ceiling";
    }

    public string Name { get; }

    public int BatchSize { get; private set; }

    /// <summary>Caller threads of the best layout: 1 (one session, default intra-op threads) or one per core (a single-threaded session each).</summary>
    public int Threads { get; private set; } = 1;

    /// <summary>Rows per second measured for each layout (caller threads) and batch size tried.</summary>
    public SortedDictionary<(int Threads, int Size), double> Calibration { get; } = new();

    /// <summary>Tries each batch size in both layouts (the parallel one only with more than one logical processor) and keeps the fastest.</summary>
    public void Calibrate(IReadOnlyList<int> sizes, TimeSpan perSize)
    {
        double best = 0;
        int[] layouts = Environment.ProcessorCount > 1 ? [1, Environment.ProcessorCount] : [1];
        foreach (int threads in layouts)
        {
            foreach (int size in sizes)
            {
                var stats = new PeerStats("calibration", Name, threads, 0);
                RunBatches(threads, size, TimeSpan.FromMilliseconds(150), new PeerStats("warmup", Name, threads, 0));
                RunBatches(threads, size, perSize, stats);
                double rate = stats.ThroughputPerSecond;
                Calibration[(threads, size)] = rate;
                if (rate > best)
                {
                    best = rate;
                    BatchSize = size;
                    Threads = threads;
                }
            }
        }
    }

    public void Run(int callers, TimeSpan duration, PeerStats stats)
    {
        stats.BatchSize = BatchSize;
        RunBatches(Threads, BatchSize, duration, stats);
    }

    public void Dispose()
    {
        foreach (var v in _inputs.Values)
        {
            v.Dispose();
        }

        foreach (var session in _parallel)
        {
            session.Dispose();
        }
    }

    private void RunBatches(int threads, int size, TimeSpan duration, PeerStats stats)
    {
        if (!_inputs.TryGetValue(size, out var input))
        {
            var data = _workload.Mlp.CreateInputs(size, seed: 7);
            _buffers.Add(data);
            input = OrtValue.CreateTensorValueFromMemory(data, [size, _workload.InputSize]);
            _inputs[size] = input;
        }

        if (threads == 1)
        {
            stats.AddActive(RunBatches(_workload.RawSession, input, size, duration, stats));
            return;
        }

        if (_parallel.Length != threads)
        {
            foreach (var old in _parallel)
            {
                old.Dispose();
            }

            _parallel = Enumerable.Range(0, threads).Select(_ => _workload.CreateSession(1)).ToArray();
        }

        // Every thread runs for the same wall time, each on its own session (the shared input is only read); the
        // active time is that wall time, so the throughput is all threads' rows over it.
        var wall = new long[threads];
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() => wall[id] = RunBatches(_parallel[id], input, size, duration, stats)) { IsBackground = true, Name = $"ceiling-{id}" };
            workers[t].Start();
        }

        foreach (var worker in workers)
        {
            worker.Join();
        }

        stats.AddActive(wall.Max());
    }

    /// <summary>Runs batches back to back on one thread for <paramref name="duration"/>; returns the ticks it ran.</summary>
    private static long RunBatches(InferenceSession session, OrtValue input, int size, TimeSpan duration, PeerStats stats)
    {
        OrtValue[] inputs = [input];
        using var runOptions = new RunOptions();
        long start = Stopwatch.GetTimestamp();
        long end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        long now = start;
        while (now < end)
        {
            using (var outputs = session.Run(runOptions, Workload.InputNames, inputs, Workload.OutputNames))
            {
                _ = outputs[1].GetTensorDataAsSpan<float>()[0];
            }

            long t1 = Stopwatch.GetTimestamp();
            stats.Success(t1 - now, size, size);
            now = t1;
        }

        return now - start;
    }
}

/// <summary>
/// The naive host: every caller calls session.Run on its own batch of one on one shared session, as hand-written
/// serving code does: a new input OrtValue per request over the caller's array, a RunOptions per caller, the
/// probabilities copied out. Closed loop: one dedicated thread per caller (its best case: no thread-pool starvation).
/// </summary>
internal sealed class NaivePeer : IClosedLoopPeer
{
    private readonly Workload _workload;

    public NaivePeer(Workload workload) => _workload = workload;

    public string Name => "naive";

    public void Run(int callers, TimeSpan duration, PeerStats stats)
    {
        bool stop = false;
        using var ready = new CountdownEvent(callers);
        using var go = new ManualResetEventSlim(false);
        var threads = new Thread[callers];
        for (int c = 0; c < callers; c++)
        {
            int id = c;
            threads[c] = new Thread(() =>
            {
                var session = _workload.RawSession;
                var data = _workload.Input(id);
                long[] shape = [1, _workload.InputSize];
                var result = new float[_workload.Classes];
                using var runOptions = new RunOptions();
                ready.Signal();
                go.Wait();
                while (!Volatile.Read(ref stop))
                {
                    long t0 = Stopwatch.GetTimestamp();
                    if (RunOne(session, runOptions, data, shape, result, stats))
                    {
                        long t1 = Stopwatch.GetTimestamp();
                        if (_workload.Matches(id, result))
                        {
                            stats.Success(t1 - t0, 1, batchSize: 1);
                        }
                        else
                        {
                            stats.WrongOutput();
                        }
                    }
                }
            })
            { IsBackground = true, Name = $"naive-{id}" };
            threads[c].Start();
        }

        ready.Wait();
        long start = Stopwatch.GetTimestamp();
        go.Set();
        Thread.Sleep(duration);
        Volatile.Write(ref stop, true);
        foreach (var t in threads)
        {
            t.Join();
        }

        stats.AddActive(Stopwatch.GetTimestamp() - start);
    }

    /// <summary>One request as a hand-written host serves it. Returns false (and counts an error) when it threw.</summary>
    internal static bool RunOne(InferenceSession session, RunOptions runOptions, float[] data, long[] shape, float[] result, PeerStats stats)
    {
        try
        {
            using var input = OrtValue.CreateTensorValueFromMemory(data, shape);
            using var outputs = session.Run(runOptions, Workload.InputNames, [input], Workload.OutputNames);
            outputs[1].GetTensorDataAsSpan<float>().CopyTo(result);
            return true;
        }
        catch (OnnxRuntimeException ex)
        {
            stats.Error(ex);
            return false;
        }
    }
}
