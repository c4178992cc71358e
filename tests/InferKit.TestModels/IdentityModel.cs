using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// <c>x</c> [batch, width] → Identity → <c>y</c> [batch, width], for one element type: shows that a type
/// crosses the runtime boundary both ways unchanged.
/// </summary>
public sealed class IdentityModel
{
    /// <summary>Name of the input.</summary>
    public const string InputName = "x";

    /// <summary>Name of the output.</summary>
    public const string OutputName = "y";

    /// <summary>Creates the model description.</summary>
    /// <param name="elementType">Element type of the input and the output.</param>
    /// <param name="width">Fixed second dimension.</param>
    public IdentityModel(OnnxElementType elementType, int width = 4)
    {
        _ = elementType.SizeOf(); // validates the enum value
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ElementType = elementType;
        Width = width;
    }

    /// <summary>Element type of the input and the output.</summary>
    public OnnxElementType ElementType { get; }

    /// <summary>Fixed second dimension.</summary>
    public int Width { get; }

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, batch dimension named "batch").</summary>
    /// <returns>The model file's bytes.</returns>
    public byte[] ToOnnx()
    {
        var graph = Graph($"identity_{ElementType}");
        graph.Input.Add(Value(InputName, ElementType, BatchDimension, Width));
        graph.Output.Add(Value(OutputName, ElementType, BatchDimension, Width));
        graph.Node.Add(Node("Identity", [InputName], [OutputName]));
        return Serialize(graph);
    }
}
