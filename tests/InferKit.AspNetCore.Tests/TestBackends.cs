using InferKit.Backends;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Tests;

/// <summary>y = 2x + 1 over float [batch, 4], and the row sums as double [batch, 1].</summary>
internal sealed class AffineBackend : IModelBackend
{
    public ModelSignature Signature { get; } = new(
        [new TensorSpec("x", TensorElementType.Float32, [-1, 4])],
        [new TensorSpec("y", TensorElementType.Float32, [-1, 4]), new TensorSpec("total", TensorElementType.Float64, [-1, 1])]);

    public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

    public static float[] Expected(float[] x) => x.Select(v => (2 * v) + 1).ToArray();

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        var x = inputs[0].GetSpan<float>();
        long rows = inputs[0].Shape[0];
        var y = new float[x.Length];
        var total = new double[rows];
        for (int i = 0; i < x.Length; i++)
        {
            y[i] = (2 * x[i]) + 1;
            total[i / 4] += x[i];
        }

        sink.OnOutput(0, TensorElementType.Float32, [rows, 4], System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan()));
        sink.OnOutput(1, TensorElementType.Float64, [rows, 1], System.Runtime.InteropServices.MemoryMarshal.AsBytes(total.AsSpan()));
    }

    public void Dispose()
    {
    }
}

/// <summary>One input of every element type, each echoed to "&lt;name&gt;_out"; not batchable, any length.</summary>
internal sealed class EchoBackend : IModelBackend
{
    public static readonly TensorElementType[] Types =
    [
        TensorElementType.Float32, TensorElementType.Float16, TensorElementType.BFloat16, TensorElementType.Float64,
        TensorElementType.Int8, TensorElementType.Int16, TensorElementType.Int32, TensorElementType.Int64,
        TensorElementType.UInt8, TensorElementType.UInt16, TensorElementType.UInt32, TensorElementType.UInt64,
        TensorElementType.Bool, TensorElementType.String,
    ];

    public ModelSignature Signature { get; } = new(
        Types.Select(t => new TensorSpec(t.ToProtocolName().ToLowerInvariant(), t, [-1])).ToArray(),
        Types.Select(t => new TensorSpec(t.ToProtocolName().ToLowerInvariant() + "_out", t, [-1])).ToArray(),
        isBatchable: false);

    public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i].ElementType == TensorElementType.String)
            {
                sink.OnStringOutput(i, inputs[i].Shape, inputs[i].GetStrings());
            }
            else
            {
                sink.OnOutput(i, inputs[i].ElementType, inputs[i].Shape, inputs[i].Bytes);
            }
        }
    }

    public void Dispose()
    {
    }
}

/// <summary>y = x over float [batch, 1]; every run waits until <see cref="Release"/> is called, and signals <see cref="Entered"/> on entry.</summary>
internal sealed class BlockingBackend : IModelBackend
{
    private readonly Gate _gate = new(nameof(BlockingBackend));

    public ModelSignature Signature { get; } = new(
        [new TensorSpec("x", TensorElementType.Float32, [-1, 1])],
        [new TensorSpec("y", TensorElementType.Float32, [-1, 1])]);

    public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

    /// <summary>Released once per run that has started.</summary>
    public SemaphoreSlim Entered { get; } = new(0);

    public void Release() => _gate.Open();

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        Entered.Release();
        _gate.Wait(cancellationToken);
        sink.OnOutput(0, TensorElementType.Float32, inputs[0].Shape, inputs[0].Bytes);
    }

    public void Dispose() => _gate.Open();
}

/// <summary>BYTES [-1] echoed; each run waits for <see cref="Release"/>, then records the strings it reads.</summary>
internal sealed class GatedStringBackend : IModelBackend
{
    private readonly Gate _gate = new(nameof(GatedStringBackend));

    public ModelSignature Signature { get; } = new([new TensorSpec("x", TensorElementType.String, [-1])], [new TensorSpec("y", TensorElementType.String, [-1])], isBatchable: false);

    public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

    public SemaphoreSlim Entered { get; } = new(0);

    public SemaphoreSlim Exited { get; } = new(0);

    public string?[] Seen { get; private set; } = [];

    public void Release() => _gate.Open();

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        try
        {
            Entered.Release();
            _gate.Wait(cancellationToken);
            Seen = inputs[0].GetStrings().ToArray();
            sink.OnStringOutput(0, inputs[0].Shape, inputs[0].GetStrings());
        }
        finally
        {
            Exited.Release();
        }
    }

    public void Dispose() => _gate.Open();
}
