using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using InferKit.Backends;
using InferKit.Tensors;
using Microsoft.ML.OnnxRuntime;
using OrtElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace InferKit.LoadTest;

/// <summary>
/// A custom InferKit backend over its own ONNX Runtime session (float inputs and outputs), registered with
/// <c>builder.AddModel</c>. With a slowdown factor f &gt; 1 it makes each run take f times its measured compute time by
/// sleeping (f - 1) times that afterwards: a slower device, not extra CPU load. Sleeps are sub-millisecond
/// (nanosleep on Linux); oversleep is carried to the next run so the average factor is exact.
/// </summary>
internal sealed partial class TimedOnnxBackend : IModelBackend
{
    private readonly InferenceSession _session;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private readonly ConcurrentBag<RunOptions> _runOptions = new();
    private readonly double _slowdown;
    private long _debt;
    private long _computeTicks;
    private long _sleepTicks;
    private long _runs;
    private long _rows;

    public TimedOnnxBackend(InferenceSession session, double slowdown)
    {
        _session = session;
        _slowdown = slowdown;
        _inputNames = session.InputNames.ToArray();
        _outputNames = session.OutputNames.ToArray();
        Signature = new ModelSignature(
            _inputNames.Select(n => Spec(n, session.InputMetadata[n])).ToArray(),
            _outputNames.Select(n => Spec(n, session.OutputMetadata[n])).ToArray());
    }

    public ModelSignature Signature { get; }

    public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

    public double Slowdown => _slowdown;

    /// <summary>(compute + sleep) / compute over every run so far: the slowdown really applied.</summary>
    public double EffectiveSlowdown
    {
        get
        {
            long compute = Interlocked.Read(ref _computeTicks);
            return compute == 0 ? double.NaN : (compute + Interlocked.Read(ref _sleepTicks)) / (double)compute;
        }
    }

    public long Runs => Interlocked.Read(ref _runs);

    public long Rows => Interlocked.Read(ref _rows);

    /// <summary>Seconds busy (compute plus injected delay).</summary>
    public double BusySeconds => (Interlocked.Read(ref _computeTicks) + Interlocked.Read(ref _sleepTicks)) / (double)Stopwatch.Frequency;

    public unsafe void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        if (inputs.Length != 1 || inputs[0].ElementType != TensorElementType.Float32)
        {
            throw new ArgumentException("This benchmark backend serves one float input.", nameof(inputs));
        }

        if (!_runOptions.TryTake(out var runOptions))
        {
            runOptions = new RunOptions();
        }

        long t0 = Stopwatch.GetTimestamp();
        var input = inputs[0];
        var bytes = input.Bytes;
        var shape = input.Shape.ToArray();
        try
        {
            fixed (byte* p = bytes)
            {
                using var value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, OrtElementType.Float, shape, (IntPtr)p, bytes.Length);
                using var outputs = _session.Run(runOptions, _inputNames, [value], _outputNames);
                for (int o = 0; o < outputs.Count; o++)
                {
                    var info = outputs[o].GetTensorTypeAndShape();
                    sink.OnOutput(o, TensorElementType.Float32, info.Shape, outputs[o].GetTensorMutableRawData());
                }
            }
        }
        finally
        {
            _runOptions.Add(runOptions);
        }

        long computed = Stopwatch.GetTimestamp() - t0;
        Interlocked.Add(ref _computeTicks, computed);
        Interlocked.Increment(ref _runs);
        Interlocked.Add(ref _rows, shape[0]);
        if (_slowdown > 1)
        {
            long want = (long)((_slowdown - 1) * computed) + Interlocked.Exchange(ref _debt, 0);
            if (want > 0)
            {
                long s0 = Stopwatch.GetTimestamp();
                PreciseSleep(want);
                long slept = Stopwatch.GetTimestamp() - s0;
                Interlocked.Add(ref _sleepTicks, slept);
                Interlocked.Add(ref _debt, want - slept);
            }
            else
            {
                Interlocked.Add(ref _debt, want);
            }
        }
    }

    public void Dispose()
    {
        _session.Dispose();
        while (_runOptions.TryTake(out var ro))
        {
            ro.Dispose();
        }
    }

    private static TensorSpec Spec(string name, NodeMetadata meta)
    {
        if (meta.ElementDataType != OrtElementType.Float)
        {
            throw new NotSupportedException($"'{name}' is {meta.ElementDataType}; this benchmark backend serves float tensors only.");
        }

        return new TensorSpec(name, TensorElementType.Float32, meta.Dimensions.Select(static d => d < 0 ? -1L : d).ToArray(), meta.SymbolicDimensions);
    }

    private static void PreciseSleep(long ticks)
    {
        if (OperatingSystem.IsLinux())
        {
            long ns = (long)(ticks * (1_000_000_000.0 / Stopwatch.Frequency));
            var request = new Timespec { Seconds = ns / 1_000_000_000, Nanoseconds = ns % 1_000_000_000 };
            _ = NanoSleep(ref request, IntPtr.Zero);
            return;
        }

        Thread.Sleep(TimeSpan.FromMilliseconds(Math.Ceiling(ticks * 1000.0 / Stopwatch.Frequency)));
    }

    [LibraryImport("libc", EntryPoint = "nanosleep")]
    private static partial int NanoSleep(ref Timespec request, IntPtr remaining);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}
