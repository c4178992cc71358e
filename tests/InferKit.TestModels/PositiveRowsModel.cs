using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// <c>x</c> float [batch, width] → <c>y</c>: the rows of <c>x</c> whose sum is positive (ReduceSum, Greater, Compress).
/// <c>y</c> is declared [batch, width] like a batch output, but has as many rows as pass the filter: a model whose
/// signature promises more than it keeps. Optionally a second output is the graph input itself
/// (<see cref="PassThroughName"/>), produced by no node.
/// </summary>
public sealed class PositiveRowsModel
{
    /// <summary>Name of the input.</summary>
    public const string InputName = "x";

    /// <summary>Name of the filtered rows.</summary>
    public const string OutputName = "y";

    /// <summary>Name of the pass-through output (the input, unchanged).</summary>
    public const string PassThroughName = "x";

    /// <summary>Creates the model description.</summary>
    /// <param name="width">Fixed second dimension.</param>
    public PositiveRowsModel(int width = 4)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        Width = width;
    }

    /// <summary>Fixed second dimension.</summary>
    public int Width { get; }

    /// <summary>The rows of <paramref name="x"/> ([rows, width], row-major) whose sum is positive, in order.</summary>
    public float[] Forward(ReadOnlySpan<float> x)
    {
        var kept = new List<float>();
        for (int row = 0; row < x.Length / Width; row++)
        {
            var values = x.Slice(row * Width, Width);
            float sum = 0;
            foreach (var v in values)
            {
                sum += v;
            }

            if (sum > 0)
            {
                kept.AddRange(values.ToArray());
            }
        }

        return kept.ToArray();
    }

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, batch dimension named "batch").</summary>
    /// <param name="passThrough">Also declare the input itself as a graph output.</param>
    /// <returns>The model file's bytes.</returns>
    public byte[] ToOnnx(bool passThrough = false)
    {
        var graph = Graph("positive_rows");
        graph.Input.Add(Value(InputName, OnnxElementType.Float, BatchDimension, Width));
        graph.Output.Add(Value(OutputName, OnnxElementType.Float, BatchDimension, Width));
        if (passThrough)
        {
            graph.Output.Add(Value(PassThroughName, OnnxElementType.Float, BatchDimension, Width));
        }

        graph.Initializer.Add(Int64s("axes", [1], 1));
        graph.Initializer.Add(Floats("zero", [0f]));
        graph.Node.Add(Node("ReduceSum", [InputName, "axes"], ["sums"], Int("keepdims", 0)));
        graph.Node.Add(Node("Greater", ["sums", "zero"], ["keep"]));
        graph.Node.Add(Node("Compress", [InputName, "keep"], [OutputName], Int("axis", 0)));
        return Serialize(graph);
    }
}
