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
/// The ceiling: raw ONNX Runtime on one session, one caller thread, a pre-created input of the best batch size
/// (found by trying a few), a reused RunOptions. The most rows per second this CPU gives this model this way.
/// </summary>
internal sealed class CeilingPeer : IClosedLoopPeer, IDisposable
{
    private readonly Workload _workload;
    private readonly Dictionary<int, OrtValue> _inputs = new();
    private readonly List<float[]> _buffers = new();

    /// <summary>The ceiling at the best batch size <see cref="Calibrate"/> finds, or (<paramref name="fixedBatch"/>) at one set size.</summary>
    public CeilingPeer(Workload workload, int? fixedBatch = null)
    {
        _workload = workload;
        BatchSize = fixedBatch ?? 1;
        Name = fixedBatch is int b ? $"ceiling-{b}" : "ceiling";
    }

    public string Name { get; }

    public int BatchSize { get; private set; }

    /// <summary>Rows per second measured at each batch size tried.</summary>
    public SortedDictionary<int, double> Calibration { get; } = new();

    public void Calibrate(IReadOnlyList<int> sizes, TimeSpan perSize)
    {
        double best = 0;
        foreach (int size in sizes)
        {
            var stats = new PeerStats("calibration", Name, 1, 0);
            RunBatches(size, TimeSpan.FromMilliseconds(150), new PeerStats("warmup", Name, 1, 0));
            RunBatches(size, perSize, stats);
            double rate = stats.ThroughputPerSecond;
            Calibration[size] = rate;
            if (rate > best)
            {
                best = rate;
                BatchSize = size;
            }
        }
    }

    public void Run(int callers, TimeSpan duration, PeerStats stats)
    {
        stats.BatchSize = BatchSize;
        RunBatches(BatchSize, duration, stats);
    }

    public void Dispose()
    {
        foreach (var v in _inputs.Values)
        {
            v.Dispose();
        }
    }

    private void RunBatches(int size, TimeSpan duration, PeerStats stats)
    {
        if (!_inputs.TryGetValue(size, out var input))
        {
            var data = _workload.Mlp.CreateInputs(size, seed: 7);
            _buffers.Add(data);
            input = OrtValue.CreateTensorValueFromMemory(data, [size, _workload.InputSize]);
            _inputs[size] = input;
        }

        var session = _workload.RawSession;
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

        stats.AddActive(now - start);
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
