using System.Collections.Concurrent;
using InferKit.Backends;
using InferKit.Tensors;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Fakes;

/// <summary>
/// A backend for scheduler tests: input "x" float [batch, 2] → output "y" = 2·x. Each request encodes its id in
/// column 0, so tests can see which requests every batch carried. It can hold runs at a gate, fail on purpose,
/// and advance a fake clock by a simulated compute time.
/// </summary>
internal sealed class FakeBackend : IModelBackend
{
    private readonly FakeTimeProvider? _time;
    private readonly Func<int, TimeSpan>? _computeTime;
    private Gate? _gate;
    private TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FakeBackend(string name = "fake", bool batchable = true, FakeTimeProvider? time = null, Func<int, TimeSpan>? computeTime = null)
    {
        Name = name;
        _time = time;
        _computeTime = computeTime;
        Signature = new ModelSignature(
            [new TensorSpec("x", TensorElementType.Float32, [batchable ? -1 : 1, 2], ["batch", null])],
            [new TensorSpec("y", TensorElementType.Float32, [batchable ? -1 : 1, 2], ["batch", null])]);
    }

    public string Name { get; }

    public ModelSignature Signature { get; }

    public ExecutionProviderInfo Provider { get; } = new("Fake", "Fake");

    /// <summary>Every run's request ids (column 0 of each row), in order; warm-up runs (id 0) are not recorded.</summary>
    public ConcurrentQueue<float[]> Batches { get; } = new();

    public int Runs;

    /// <summary>The name of the thread each recorded run ran on (null for an unnamed thread), in order.</summary>
    public ConcurrentQueue<string?> Threads { get; } = new();

    /// <summary>The managed thread id of each recorded run, in order.</summary>
    public ConcurrentQueue<int> ThreadIds { get; } = new();

    public bool Disposed { get; private set; }

    /// <summary>Runs that started after <see cref="Dispose"/> (with ONNX Runtime, a use-after-free that crashes the process).</summary>
    public int RunsAfterDispose;

    /// <summary>When set, runs throw this exception.</summary>
    public Func<Exception?>? Failure { get; set; }

    /// <summary>
    /// When set, a run of more than one row hands back only its first row, as a model whose output does not follow the
    /// batch axis would: a joined batch's outputs cannot be split back into its requests, while one request alone is answered.
    /// </summary>
    public bool FirstRowOnlyWhenJoined { get; set; }

    /// <summary>
    /// How long a run waits at the gate (<see cref="Gate"/>) before it fails with a <see cref="TimeoutException"/>, so that a
    /// test that fails or ends before <see cref="Release"/> still ends, however its host is disposed; read by
    /// <see cref="Hold"/>. A released gate does not wait for it.
    /// </summary>
    public TimeSpan GateTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Makes the next runs wait at a gate until <see cref="Release"/>.</summary>
    public void Hold()
    {
        _gate = new Gate($"FakeBackend '{Name}'") { Timeout = GateTimeout };
        _entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Completes when a run is waiting at the gate.</summary>
    public Task Entered => _entered.Task;

    /// <summary>Lets held runs go (all current and future ones).</summary>
    public void Release()
    {
        var gate = _gate;
        _gate = null;
        gate?.Open();
    }

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        if (Disposed)
        {
            Interlocked.Increment(ref RunsAfterDispose);
        }

        var x = inputs[0];
        var data = x.GetSpan<float>();
        int rows = (int)x.Shape[0];
        bool warmup = data.Length > 0 && data[0] == 0;
        if (!warmup)
        {
            var ids = new float[rows];
            for (int r = 0; r < rows; r++)
            {
                ids[r] = data[r * 2];
            }

            Batches.Enqueue(ids);
            Threads.Enqueue(Thread.CurrentThread.Name);
            ThreadIds.Enqueue(Environment.CurrentManagedThreadId);
            Interlocked.Increment(ref Runs);
            var gate = _gate;
            if (gate is not null)
            {
                _entered.TrySetResult();
                gate.Wait(cancellationToken);
            }
        }

        if (_computeTime is not null)
        {
            _time?.Advance(_computeTime(rows));
        }

        if (!warmup && Failure?.Invoke() is { } error)
        {
            throw error;
        }

        var y = new float[data.Length];
        for (int i = 0; i < y.Length; i++)
        {
            y[i] = data[i] * 2;
        }

        if (FirstRowOnlyWhenJoined && rows > 1)
        {
            sink.OnOutput(0, TensorElementType.Float32, [1, 2], System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan(0, 2)));
            return;
        }

        sink.OnOutput(0, TensorElementType.Float32, x.Shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan()));
    }

    public void Dispose() => Disposed = true;

    /// <summary>A one-row request whose id is <paramref name="id"/>.</summary>
    public static InferenceRequest Request(int id, InferencePriority priority = InferencePriority.Normal, TimeSpan? timeout = null, int rows = 1)
    {
        var data = new float[rows * 2];
        for (int r = 0; r < rows; r++)
        {
            data[r * 2] = id;
            data[(r * 2) + 1] = r;
        }

        return new InferenceRequest(Tensor.Create("x", data, rows, 2)) { Priority = priority, Timeout = timeout, Id = id.ToString(System.Globalization.CultureInfo.InvariantCulture) };
    }
}
