using System.Globalization;
using InferKit.Backends;
using InferKit.Tensors;

namespace InferKit.Scheduling;

/// <summary>Checks a request against a model's signature before it is queued, and orders its inputs.</summary>
internal static class RequestValidator
{
    /// <summary>
    /// Validates <paramref name="request"/> and writes its inputs in signature order into <paramref name="ordered"/>, and the
    /// outputs it asks for into the masks (see <see cref="OutputMask"/>).
    /// </summary>
    /// <returns>The number of rows (the batch dimension) the request carries; 1 for a model without a batch axis.</returns>
    /// <exception cref="InvalidInferenceRequestException">What was wrong, naming the model, the input, what was expected and what came.</exception>
    public static int Validate(string model, ModelSignature signature, InferenceRequest request, Span<Tensor> ordered, int maxPaddedLength, bool padding, out ulong outputMask, out ulong[]? wideOutputMask)
    {
        RequestChecks.Check(model, request);
        var specs = signature.Inputs;
        var inputs = request.InputArray;
        ordered.Clear();
        foreach (var tensor in inputs)
        {
            int index = signature.IndexOfInput(tensor.Name);
            if (index < 0)
            {
                throw new InvalidInferenceRequestException(model, tensor.Name,
                    $"Model '{model}': unexpected input '{tensor.Name}'. The model takes {Describe(specs)}.");
            }

            if (!ordered[index].IsDefault)
            {
                throw new InvalidInferenceRequestException(model, tensor.Name, $"Model '{model}': input '{tensor.Name}' is given more than once.");
            }

            ordered[index] = tensor;
        }

        int rows = -1;
        string? rowsFrom = null;
        for (int i = 0; i < specs.Count; i++)
        {
            var spec = specs[i];
            var tensor = ordered[i];
            if (tensor.IsDefault)
            {
                throw new InvalidInferenceRequestException(model, spec.Name,
                    $"Model '{model}': missing input '{spec.Name}' ({spec.ElementType}{Tensor.FormatShape(spec.Shape.ToArray())}). The model takes {Describe(specs)}.");
            }

            if (tensor.ElementType != spec.ElementType)
            {
                throw new InvalidInferenceRequestException(model, spec.Name,
                    $"Model '{model}': input '{spec.Name}' must be {spec.ElementType} ({spec.ElementType.ToProtocolName()}), got {tensor.ElementType} ({tensor.ElementType.ToProtocolName()}).");
            }

            if (spec.ElementType == TensorElementType.String)
            {
                CheckStrings(model, spec.Name, tensor.GetStrings());
            }

            var shape = tensor.Shape;
            if (shape.Length != spec.Rank)
            {
                throw new InvalidInferenceRequestException(model, spec.Name,
                    $"Model '{model}': input '{spec.Name}' must have rank {spec.Rank} (shape {Tensor.FormatShape(spec.Shape.ToArray())}), got rank {shape.Length} (shape {Tensor.FormatShape(shape)}).");
            }

            for (int d = 0; d < shape.Length; d++)
            {
                long expected = spec.Shape[d];
                if (expected >= 0 && shape[d] != expected)
                {
                    string hint = d == 0 ? $" The model has a fixed batch size of {expected}: send {expected} row(s) per request." : string.Empty;
                    throw new InvalidInferenceRequestException(model, spec.Name,
                        $"Model '{model}': input '{spec.Name}' dimension {d} must be {expected} (shape {Tensor.FormatShape(spec.Shape.ToArray())}), got {shape[d]} (shape {Tensor.FormatShape(shape)}).{hint}");
                }

                if (padding && d > 0 && expected < 0 && shape[d] > maxPaddedLength)
                {
                    throw new InvalidInferenceRequestException(model, spec.Name,
                        $"Model '{model}': input '{spec.Name}' dimension {d} is {shape[d]}, longer than the padding limit {maxPaddedLength}.");
                }
            }

            if (signature.IsBatchable)
            {
                if (shape[0] == 0)
                {
                    throw new InvalidInferenceRequestException(model, spec.Name,
                        $"Model '{model}': input '{spec.Name}' has 0 rows (shape {Tensor.FormatShape(shape)}); a request needs at least one.");
                }

                if (rows < 0)
                {
                    if (shape[0] > int.MaxValue)
                    {
                        throw new InvalidInferenceRequestException(model, spec.Name,
                            $"Model '{model}': input '{spec.Name}' has {shape[0]} rows (shape {Tensor.FormatShape(shape)}); a request carries at most {int.MaxValue}.");
                    }

                    rows = (int)shape[0];
                    rowsFrom = spec.Name;
                }
                else if (shape[0] != rows)
                {
                    throw new InvalidInferenceRequestException(model, spec.Name,
                        $"Model '{model}': inputs disagree on the batch dimension: '{rowsFrom}' has {rows} rows, '{spec.Name}' has {shape[0]}.");
                }
            }
        }

        CheckNamedDimensions(model, signature, ordered);
        outputMask = OutputMask(model, signature, request.RequestedOutputs, out wideOutputMask);
        return signature.IsBatchable ? rows : 1;
    }

    /// <summary>
    /// A string (BYTES) tensor holds strings, not nulls: ONNX Runtime has no null string, and sending one as an empty
    /// string would answer a question the caller did not ask.
    /// </summary>
    private static void CheckStrings(string model, string input, ReadOnlySpan<string> strings)
    {
        for (int i = 0; i < strings.Length; i++)
        {
            if (strings[i] is null)
            {
                throw new InvalidInferenceRequestException(model, input, string.Create(CultureInfo.InvariantCulture,
                    $"Model '{model}': input '{input}' element {i} is null; a string (BYTES) tensor holds strings only (\"\" for an empty one)."));
            }
        }
    }

    /// <summary>
    /// Dynamic dimensions that share a symbolic name (for example "sequence") must agree, across inputs and within one.
    /// Axis 0 counts too when it is no batch axis (a batch axis is checked as the request's rows): ONNX Runtime does not
    /// check symbolic dimensions, and an operator that broadcasts would answer for inputs the model cannot take.
    /// </summary>
    private static void CheckNamedDimensions(string model, ModelSignature signature, ReadOnlySpan<Tensor> ordered)
    {
        var specs = signature.Inputs;
        int first = signature.IsBatchable ? 1 : 0;
        for (int i = 0; i < specs.Count; i++)
        {
            for (int d = first; d < specs[i].Rank; d++)
            {
                var name = specs[i].DimensionNames[d];
                if (name is null || specs[i].Shape[d] >= 0)
                {
                    continue;
                }

                // The later axes of this input (an attention bias [batch, sequence, sequence]), then every later input.
                for (int j = i; j < specs.Count; j++)
                {
                    for (int e = j == i ? d + 1 : first; e < specs[j].Rank; e++)
                    {
                        if (string.Equals(specs[j].DimensionNames[e], name, StringComparison.Ordinal) && ordered[i].Shape[d] != ordered[j].Shape[e])
                        {
                            throw new InvalidInferenceRequestException(model, specs[j].Name, j == i
                                ? $"Model '{model}': input '{specs[i].Name}' disagrees with itself on dimension '{name}': axis {d} is {ordered[i].Shape[d]}, axis {e} is {ordered[j].Shape[e]} (shape {Tensor.FormatShape(ordered[i].Shape)})."
                                : $"Model '{model}': inputs '{specs[i].Name}' and '{specs[j].Name}' disagree on dimension '{name}': {ordered[i].Shape[d]} vs {ordered[j].Shape[e]}.");
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// Which outputs the request wants: bit i for output i, every bit set when it names none (all of them). For a model
    /// with more than 64 outputs, a request that names some gets them in <paramref name="wide"/> instead (bit i of word
    /// i / 64), and the mask is 0.
    /// </summary>
    private static ulong OutputMask(string model, ModelSignature signature, IReadOnlyList<string>? requested, out ulong[]? wide)
    {
        wide = null;
        if (requested is null || requested.Count == 0)
        {
            return ulong.MaxValue;
        }

        int outputs = signature.Outputs.Count;
        ulong mask = 0;
        foreach (var name in requested)
        {
            int index = signature.IndexOfOutput(name);
            if (index < 0)
            {
                throw new InvalidInferenceRequestException(model, null,
                    $"Model '{model}': unknown requested output '{name}'. The model returns {Describe(signature.Outputs)}.");
            }

            if (outputs > 64)
            {
                wide ??= new ulong[(outputs + 63) / 64];
                wide[index >> 6] |= 1UL << (index & 63);
            }
            else
            {
                mask |= 1UL << index;
            }
        }

        return mask;
    }

    private static string Describe(IReadOnlyList<TensorSpec> specs)
    {
        if (specs.Count == 0)
        {
            return "no tensors";
        }

        return string.Join(", ", specs.Select(static s => $"'{s.Name}' {s.ElementType}{Tensor.FormatShape(s.Shape.ToArray())}"));
    }
}
