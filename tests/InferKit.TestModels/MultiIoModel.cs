using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// A model with two inputs and three outputs of two element types:
/// <c>a</c>, <c>b</c> float [batch, width] → <c>sum</c> = a + b, <c>product</c> = a · b (float [batch, width])
/// and <c>argmax</c> = ArgMax(sum, axis 1, keepdims 0) int64 [batch].
/// </summary>
public sealed class MultiIoModel
{
    /// <summary>Name of the first input.</summary>
    public const string InputA = "a";

    /// <summary>Name of the second input.</summary>
    public const string InputB = "b";

    /// <summary>Name of the element-wise sum output.</summary>
    public const string SumName = "sum";

    /// <summary>Name of the element-wise product output.</summary>
    public const string ProductName = "product";

    /// <summary>Name of the int64 output: the arg-max of each row of the sum.</summary>
    public const string ArgMaxName = "argmax";

    /// <summary>Creates the model description.</summary>
    /// <param name="width">Fixed width of both inputs (the second dimension).</param>
    public MultiIoModel(int width = 4)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        Width = width;
    }

    /// <summary>Fixed width of the inputs and of the float outputs.</summary>
    public int Width { get; }

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, batch dimension named "batch").</summary>
    /// <returns>The model file's bytes.</returns>
    public byte[] ToOnnx()
    {
        var graph = Graph("multi_io");
        graph.Input.Add(Value(InputA, OnnxElementType.Float, BatchDimension, Width));
        graph.Input.Add(Value(InputB, OnnxElementType.Float, BatchDimension, Width));
        graph.Output.Add(Value(SumName, OnnxElementType.Float, BatchDimension, Width));
        graph.Output.Add(Value(ProductName, OnnxElementType.Float, BatchDimension, Width));
        graph.Output.Add(Value(ArgMaxName, OnnxElementType.Int64, BatchDimension));
        graph.Node.Add(Node("Add", [InputA, InputB], [SumName]));
        graph.Node.Add(Node("Mul", [InputA, InputB], [ProductName]));
        graph.Node.Add(Node("ArgMax", [SumName], [ArgMaxName], Int("axis", 1), Int("keepdims", 0)));
        return Serialize(graph);
    }
}
