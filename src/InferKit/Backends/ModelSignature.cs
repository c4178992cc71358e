using System.Collections.ObjectModel;
using System.Globalization;
using InferKit.Tensors;

namespace InferKit.Backends;

/// <summary>The description of one model input or output.</summary>
public sealed class TensorSpec
{
    /// <summary>Creates a spec.</summary>
    /// <param name="name">The input or output name.</param>
    /// <param name="elementType">The element type.</param>
    /// <param name="shape">The dimensions; -1 marks a dynamic (symbolic) dimension.</param>
    /// <param name="dimensionNames">Symbolic names of the dynamic dimensions (null where there is none); null for none at all.</param>
    public TensorSpec(string name, TensorElementType elementType, IReadOnlyList<long> shape, IReadOnlyList<string?>? dimensionNames = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (elementType == TensorElementType.Undefined)
        {
            throw new ArgumentException($"Tensor '{name}' has an undefined element type.", nameof(elementType));
        }

        Name = name;
        ElementType = elementType;
        Shape = shape.ToArray();
        var names = new string?[Shape.Count];
        if (dimensionNames is not null)
        {
            for (int i = 0; i < names.Length && i < dimensionNames.Count; i++)
            {
                names[i] = string.IsNullOrEmpty(dimensionNames[i]) ? null : dimensionNames[i];
            }
        }

        DimensionNames = names;
    }

    /// <summary>The input or output name.</summary>
    public string Name { get; }

    /// <summary>The element type.</summary>
    public TensorElementType ElementType { get; }

    /// <summary>The dimensions; -1 marks a dynamic one.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The symbolic name of each dimension, or null.</summary>
    public IReadOnlyList<string?> DimensionNames { get; }

    /// <summary>The number of dimensions.</summary>
    public int Rank => Shape.Count;

    /// <summary>True when the first dimension is dynamic (a batch axis candidate).</summary>
    public bool HasDynamicFirstDimension => Shape.Count > 0 && Shape[0] < 0;

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {ElementType}{Tensor.FormatShape(Shape.ToArray())}";
}

/// <summary>What a model takes and returns, read from its metadata.</summary>
public sealed class ModelSignature
{
    /// <summary>Creates a signature.</summary>
    /// <param name="inputs">The inputs, in the model's order.</param>
    /// <param name="outputs">The outputs, in the model's order.</param>
    /// <param name="isBatchable">
    /// Whether axis 0 of every input and output is a batch axis. Null infers it: batchable when every input and
    /// output has a dynamic first dimension.
    /// </param>
    public ModelSignature(IReadOnlyList<TensorSpec> inputs, IReadOnlyList<TensorSpec> outputs, bool? isBatchable = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(outputs);
        Inputs = new ReadOnlyCollection<TensorSpec>(Checked(inputs, "input", nameof(inputs)));
        Outputs = new ReadOnlyCollection<TensorSpec>(Checked(outputs, "output", nameof(outputs)));
        IsBatchable = isBatchable ?? (Inputs.Count > 0
            && Inputs.All(static i => i.HasDynamicFirstDimension)
            && Outputs.All(static o => o.HasDynamicFirstDimension));
    }

    /// <summary>The inputs, in the model's order.</summary>
    public IReadOnlyList<TensorSpec> Inputs { get; }

    /// <summary>The outputs, in the model's order.</summary>
    public IReadOnlyList<TensorSpec> Outputs { get; }

    /// <summary>True when axis 0 of every input and output is a batch axis, so requests can be joined.</summary>
    public bool IsBatchable { get; }

    /// <summary>The position of an input, or -1.</summary>
    public int IndexOfInput(string name) => IndexOf(Inputs, name);

    /// <summary>The position of an output, or -1.</summary>
    public int IndexOfOutput(string name) => IndexOf(Outputs, name);

    /// <summary>Returns a copy with batching switched off (for a model whose axis 0 is not a batch axis despite being dynamic).</summary>
    public ModelSignature WithoutBatching() => IsBatchable ? new ModelSignature(Inputs, Outputs, false) : this;

    /// <summary>
    /// A copy of the specs, each present and named once: a request names its tensors, so a second spec of one name could
    /// never be given (each request would be refused as missing it) nor told apart in an answer.
    /// </summary>
    private static TensorSpec[] Checked(IReadOnlyList<TensorSpec> specs, string kind, string parameter)
    {
        var copy = specs.ToArray();
        var seen = new Dictionary<string, int>(copy.Length, StringComparer.Ordinal);
        for (int i = 0; i < copy.Length; i++)
        {
            if (copy[i] is null)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{kind} {i} of the signature is null."), parameter);
            }

            if (!seen.TryAdd(copy[i].Name, i))
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                    $"The signature names {kind} '{copy[i].Name}' twice ({kind}s {seen[copy[i].Name]} and {i}); each {kind} needs a name of its own."), parameter);
            }
        }

        return copy;
    }

    private static int IndexOf(IReadOnlyList<TensorSpec> specs, string name)
    {
        for (int i = 0; i < specs.Count; i++)
        {
            if (string.Equals(specs[i].Name, name, StringComparison.Ordinal))
            {
                return i;
            }
        }

        return -1;
    }
}
