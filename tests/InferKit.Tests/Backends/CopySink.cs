using System.Runtime.InteropServices;
using InferKit.Backends;
using InferKit.Tensors;

namespace InferKit.Tests.Backends;

/// <summary>Copies each float output of a backend run, with its shape, in the order the backend hands them over.</summary>
internal sealed class CopySink : IBackendOutputSink
{
    public List<float[]> Outputs { get; } = new();

    public List<long[]> Shapes { get; } = new();

    public void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data)
    {
        Assert.Equal(TensorElementType.Float32, elementType);
        Outputs.Add(MemoryMarshal.Cast<byte, float>(data).ToArray());
        Shapes.Add(shape.ToArray());
    }

    public void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data)
        => throw new InvalidOperationException("These models have no string outputs.");
}
