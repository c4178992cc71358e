using InferKit.Tensors;

namespace InferKit.Backends;

/// <summary>
/// One loaded instance of a model. Implementations own every native object they create: nothing they
/// allocate outlives a call to <see cref="Run"/> except through the spans handed to the sink, which are
/// valid only during the sink call. <see cref="Run"/> may be called concurrently.
/// </summary>
public interface IModelBackend : IDisposable
{
    /// <summary>The model's inputs and outputs.</summary>
    ModelSignature Signature { get; }

    /// <summary>Which execution provider serves this instance, and whether it is a fallback.</summary>
    ExecutionProviderInfo Provider { get; }

    /// <summary>
    /// Runs the model once, synchronously, on the calling thread.
    /// </summary>
    /// <param name="inputs">One tensor per signature input, in signature order, already validated.</param>
    /// <param name="sink">Receives every signature output, in order; the spans are valid only during the call.</param>
    /// <param name="cancellationToken">Aborts the run; the backend then throws <see cref="OperationCanceledException"/>.</param>
    void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken);
}

/// <summary>Receives the outputs of one <see cref="IModelBackend.Run"/> call. The spans must be copied, not kept.</summary>
public interface IBackendOutputSink
{
    /// <summary>A numeric output: its signature index, actual shape and raw bytes.</summary>
    void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data);

    /// <summary>A string output: its signature index, actual shape and elements.</summary>
    void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data);
}

/// <summary>The execution provider that serves a model instance.</summary>
/// <param name="Name">The provider serving: "CPU", "CUDA", "TensorRT", or a custom backend's name.</param>
/// <param name="Requested">The provider that was asked for.</param>
/// <param name="DeviceId">The device, for GPU providers.</param>
/// <param name="FallbackReason">Why the requested provider could not serve, when <see cref="IsFallback"/>.</param>
public sealed record ExecutionProviderInfo(string Name, string Requested, int DeviceId = 0, string? FallbackReason = null)
{
    /// <summary>The CPU provider, as asked.</summary>
    public static ExecutionProviderInfo Cpu { get; } = new("CPU", "CPU");

    /// <summary>True when the requested provider could not load and another serves instead.</summary>
    public bool IsFallback => !string.Equals(Name, Requested, StringComparison.Ordinal);
}
