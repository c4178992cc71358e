using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// A model whose first dimension is fixed to 1 (like ResNet18's [1, 3, 224, 224]), so it cannot be batched:
/// <c>x</c> float [1, width] → Mul by 2 → <c>y</c> float [1, width].
/// </summary>
public sealed class FixedBatchModel
{
    /// <summary>Name of the input.</summary>
    public const string InputName = "x";

    /// <summary>Name of the output.</summary>
    public const string OutputName = "y";

    /// <summary>The factor the model multiplies its input by.</summary>
    public const float Factor = 2f;

    /// <summary>Creates the model description.</summary>
    /// <param name="width">Fixed second dimension.</param>
    public FixedBatchModel(int width = 4)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        Width = width;
    }

    /// <summary>Fixed second dimension.</summary>
    public int Width { get; }

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, no symbolic dimension).</summary>
    /// <returns>The model file's bytes.</returns>
    public byte[] ToOnnx()
    {
        var graph = Graph("fixed_batch");
        graph.Input.Add(Value(InputName, OnnxElementType.Float, 1, Width));
        graph.Output.Add(Value(OutputName, OnnxElementType.Float, 1, Width));
        graph.Initializer.Add(Floats("factor", [Factor]));
        graph.Node.Add(Node("Mul", [InputName, "factor"], [OutputName]));
        return Serialize(graph);
    }
}
