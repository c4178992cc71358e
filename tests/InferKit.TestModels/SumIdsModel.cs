using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// A model with an int64 input and two symbolic dimensions, shaped like a token-id model:
/// <c>ids</c> int64 [batch, sequence] → Cast to float → ReduceSum over axis 1 (keepdims 0) → <c>total</c> float [batch].
/// </summary>
public sealed class SumIdsModel
{
    /// <summary>Name of the input.</summary>
    public const string InputName = "ids";

    /// <summary>Name of the output.</summary>
    public const string OutputName = "total";

    /// <summary>Name of the second, symbolic input dimension.</summary>
    public const string SequenceDimension = "sequence";

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, dimensions named "batch" and "sequence").</summary>
    /// <returns>The model file's bytes.</returns>
#pragma warning disable CA1822 // An instance method, like the other models.
    public byte[] ToOnnx()
#pragma warning restore CA1822
    {
        var graph = Graph("sum_ids");
        graph.Input.Add(Value(InputName, OnnxElementType.Int64, BatchDimension, SequenceDimension));
        graph.Output.Add(Value(OutputName, OnnxElementType.Float, BatchDimension));
        graph.Initializer.Add(Int64s("reduce_axes", [1L], 1));
        graph.Node.Add(Node("Cast", [InputName], ["ids_float"], Int("to", (long)OnnxElementType.Float)));
        graph.Node.Add(Node("ReduceSum", ["ids_float", "reduce_axes"], [OutputName], Int("keepdims", 0)));
        return Serialize(graph);
    }

    /// <summary>The C# reference: the sum of each row of ids, as float.</summary>
    /// <param name="ids">Row-major ids [rows, sequence].</param>
    /// <param name="rows">Number of rows.</param>
    /// <returns>One total per row.</returns>
    public static float[] Reference(ReadOnlySpan<long> ids, int rows)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        if (ids.Length % rows != 0)
        {
            throw new ArgumentException($"{ids.Length} ids do not split into {rows} rows.", nameof(ids));
        }

        var sequence = ids.Length / rows;
        var totals = new float[rows];
        for (var r = 0; r < rows; r++)
        {
            var sum = 0.0f;
            foreach (var id in ids.Slice(r * sequence, sequence))
            {
                sum += id;
            }

            totals[r] = sum;
        }

        return totals;
    }
}
