using System.Globalization;
using InferKit.Backends;
using InferKit.Tensors;

namespace InferKit.Scheduling;

/// <summary>
/// Which input axes may differ between requests of one batch (padded to the longest) and which output axes
/// follow them (cut back to each request's own length). Without padding, every non-batch axis must match.
/// </summary>
internal sealed class PaddingPlan
{
    private PaddingPlan(bool[][] paddedInputAxes, byte[][] padValues, (int Axis, int Input, int InputAxis)[][] outputTrims, (int Input, int Axis, int SameAsInput)[] unnamedTies)
    {
        PaddedInputAxes = paddedInputAxes;
        PadValues = padValues;
        OutputTrims = outputTrims;
        UnnamedTies = unnamedTies;
    }

    /// <summary>Per input, per axis: whether the axis is padded.</summary>
    public bool[][] PaddedInputAxes { get; }

    /// <summary>Per input: the bytes of one pad element.</summary>
    public byte[][] PadValues { get; }

    /// <summary>Per output: the axes cut back to a request's own length, and the input axis that length comes from.</summary>
    public (int Axis, int Input, int InputAxis)[][] OutputTrims { get; }

    /// <summary>
    /// Padded axes without a dimension name that may be one axis: axis <c>Axis</c> of input <c>Input</c> sits at the same
    /// position as <c>Axis</c> of the earlier input <c>SameAsInput</c>, of the same rank (input_ids and attention_mask
    /// [batch, ?]). The model does not say whether they are; a request that gives them different lengths is therefore
    /// never joined (see <see cref="Compatible"/>). Axes that share a name are one axis, and admission refuses a request
    /// that disagrees on one (see <see cref="RequestValidator"/>).
    /// </summary>
    public (int Input, int Axis, int SameAsInput)[] UnnamedTies { get; }

    public bool Enabled { get; private init; }

    public static PaddingPlan Create(string model, ModelSignature signature, PaddingOptions options)
    {
        var inputs = signature.Inputs;
        var padded = new bool[inputs.Count][];
        var values = new byte[inputs.Count][];
        var byName = new Dictionary<string, (int Input, int Axis)>(StringComparer.Ordinal);
        var unnamed = new Dictionary<(int Rank, int Axis), int>();
        var ties = new List<(int, int, int)>();
        bool any = false;
        for (int i = 0; i < inputs.Count; i++)
        {
            padded[i] = new bool[inputs[i].Rank];
            double pad = 0;
            if (options.PadValues.TryGetValue(inputs[i].Name, out var v))
            {
                CheckPadValue(model, inputs[i], v);
                pad = v;
            }

            values[i] = BatchTensorOps.ElementBytes(inputs[i].ElementType, pad);
            if (!options.Enabled || !signature.IsBatchable)
            {
                continue;
            }

            for (int d = 1; d < inputs[i].Rank; d++)
            {
                if (inputs[i].Shape[d] < 0)
                {
                    padded[i][d] = true;
                    any = true;
                    if (inputs[i].DimensionNames[d] is string dimName)
                    {
                        byName.TryAdd(dimName, (i, d));
                    }
                    else if (!unnamed.TryAdd((inputs[i].Rank, d), i))
                    {
                        ties.Add((i, d, unnamed[(inputs[i].Rank, d)]));
                    }
                }
            }
        }

        foreach (var key in options.PadValues.Keys)
        {
            if (signature.IndexOfInput(key) < 0)
            {
                throw new InvalidOperationException($"Model '{model}': Batching.Padding.PadValues names input '{key}', which the model does not have.");
            }
        }

        var outputs = signature.Outputs;
        var trims = new (int, int, int)[outputs.Count][];
        for (int o = 0; o < outputs.Count; o++)
        {
            var list = new List<(int, int, int)>();
            if (any)
            {
                if (options.OutputAxes.TryGetValue(outputs[o].Name, out var explicitAxis))
                {
                    int input = signature.IndexOfInput(explicitAxis.Input);
                    if (input < 0 || explicitAxis.InputAxis < 1 || explicitAxis.InputAxis >= inputs[input].Rank || explicitAxis.OutputAxis < 1 || explicitAxis.OutputAxis >= outputs[o].Rank)
                    {
                        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                            $"Model '{model}': Batching.Padding.OutputAxes['{outputs[o].Name}'] = (OutputAxis {explicitAxis.OutputAxis}, Input '{explicitAxis.Input}', InputAxis {explicitAxis.InputAxis}) does not match the model's shapes: the input must be one of the model's, its axis from 1 to its rank less 1, and the output axis from 1 to {outputs[o].Rank - 1}."));
                    }

                    list.Add((explicitAxis.OutputAxis, input, explicitAxis.InputAxis));
                }
                else
                {
                    for (int d = 1; d < outputs[o].Rank; d++)
                    {
                        if (outputs[o].DimensionNames[d] is string dimName && byName.TryGetValue(dimName, out var source))
                        {
                            list.Add((d, source.Input, source.Axis));
                        }
                    }
                }
            }

            trims[o] = list.ToArray();
        }

        foreach (var key in options.OutputAxes.Keys)
        {
            if (signature.IndexOfOutput(key) < 0)
            {
                throw new InvalidOperationException($"Model '{model}': Batching.Padding.OutputAxes names output '{key}', which the model does not have.");
            }
        }

        return new PaddingPlan(padded, values, trims, ties.ToArray()) { Enabled = any };
    }

    /// <summary>
    /// A pad value must be one the input's element type holds: a whole number in range for an integer, 0 or 1 for a
    /// bool, a value that stays finite for a float (NaN and infinities pass as such). Converting another would pad with a
    /// different value than the one configured (-1 as a UInt8 becomes 0, 0.5 as an Int64 becomes 0).
    /// </summary>
    private static void CheckPadValue(string model, TensorSpec input, double value)
    {
        var type = input.ElementType;
        var (min, max) = IntegerRange(type);
        string? needs = type switch
        {
            TensorElementType.String => "a string (BYTES) input pads with empty strings and takes no pad value",
            TensorElementType.Bool => value is 0 or 1 ? null : "a bool input pads with 0 or 1",
            TensorElementType.Float64 => null,
            TensorElementType.Float32 => StaysFinite(value, float.IsInfinity((float)value)),
            TensorElementType.Float16 => StaysFinite(value, Half.IsInfinity((Half)value)),
            TensorElementType.BFloat16 => StaysFinite(value, float.IsInfinity((float)(BFloat16)(float)value)),
            _ => value >= min && value <= max && Math.Floor(value) == value
                ? null
                : string.Create(CultureInfo.InvariantCulture, $"a {type} input pads with a whole number from {(long)min} to {(type == TensorElementType.UInt64 ? ulong.MaxValue : type == TensorElementType.Int64 ? (ulong)long.MaxValue : (ulong)max)}"),
        };

        if (needs is not null)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                $"Model '{model}': Batching.Padding.PadValues['{input.Name}'] = {value:R} does not fit input '{input.Name}' ({type}): {needs}."));
        }

        static string? StaysFinite(double value, bool infinite) => double.IsFinite(value) && infinite ? "the value is out of the type's range" : null;
    }

    /// <summary>The smallest and largest whole numbers an integer element type holds (as doubles: the largest 64-bit ones are rounded down to one that fits).</summary>
    private static (double Min, double Max) IntegerRange(TensorElementType type) => type switch
    {
        TensorElementType.Int8 => (sbyte.MinValue, sbyte.MaxValue),
        TensorElementType.UInt8 => (byte.MinValue, byte.MaxValue),
        TensorElementType.Int16 => (short.MinValue, short.MaxValue),
        TensorElementType.UInt16 => (ushort.MinValue, ushort.MaxValue),
        TensorElementType.Int32 => (int.MinValue, int.MaxValue),
        TensorElementType.UInt32 => (uint.MinValue, uint.MaxValue),
        TensorElementType.Int64 => (long.MinValue, Math.BitDecrement((double)long.MaxValue)),
        TensorElementType.UInt64 => (0, Math.BitDecrement((double)ulong.MaxValue)),
        _ => (0, 0),
    };

    /// <summary>
    /// True when two validated requests may share a batch. A request whose inputs disagree on axes that may be one
    /// (<see cref="UnnamedTies"/>, 7 ids with a mask of 5) shares with none: padded beside others, each of its inputs
    /// would grow to the batch's own longest (its mask to 7, read as "the last two tokens are padding"), an answer it did
    /// not ask for. Alone, it reaches the model as it came, and the model's own answer or error is the request's.
    /// </summary>
    public bool Compatible(Tensor[] a, Tensor[] b)
    {
        if (UnnamedTies.Length > 0 && (Disagrees(a) || Disagrees(b)))
        {
            return false;
        }

        for (int i = 0; i < a.Length; i++)
        {
            var sa = a[i].Shape;
            var sb = b[i].Shape;
            var axes = PaddedInputAxes[i];
            for (int d = 1; d < sa.Length; d++)
            {
                if (sa[d] != sb[d] && !axes[d])
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>True when the request's inputs give axes that may be one (<see cref="UnnamedTies"/>) different lengths.</summary>
    private bool Disagrees(Tensor[] inputs)
    {
        foreach (var (input, axis, sameAs) in UnnamedTies)
        {
            if (inputs[input].Shape[axis] != inputs[sameAs].Shape[axis])
            {
                return true;
            }
        }

        return false;
    }
}
