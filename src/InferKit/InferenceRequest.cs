using InferKit.Tensors;

namespace InferKit;

/// <summary>Priority of a request. Higher levels are served first; a lower level is never starved forever.</summary>
public enum InferencePriority
{
    /// <summary>Background work.</summary>
    Low = 0,
    /// <summary>The default.</summary>
    Normal = 1,
    /// <summary>Interactive work.</summary>
    High = 2,
    /// <summary>Urgent work: served first; adaptive selection may route it straight to the fastest variant.</summary>
    Critical = 3,
}

/// <summary>One call to a model: its input tensors and how it should be scheduled.</summary>
public sealed class InferenceRequest
{
    /// <summary>Creates a request from its inputs.</summary>
    /// <exception cref="ArgumentException">An input is a default tensor.</exception>
    public InferenceRequest(params Tensor[] inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i].IsDefault)
            {
                throw new ArgumentException($"Input {i} is a default tensor; build inputs with Tensor.Create.", nameof(inputs));
            }
        }

        InputArray = inputs;
    }

    /// <summary>The input tensors, one per model input.</summary>
    public IReadOnlyList<Tensor> Inputs => InputArray;

    internal Tensor[] InputArray { get; }

    /// <summary>A caller-chosen id, echoed in the response and in telemetry.</summary>
    public string? Id { get; init; }

    /// <summary>How long the caller will wait, counted from admission. Overrides the model's default timeout.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>An absolute deadline. When both this and <see cref="Timeout"/> are set, the earlier wins.</summary>
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>The scheduling priority.</summary>
    public InferencePriority Priority { get; init; } = InferencePriority.Normal;

    /// <summary>The outputs wanted, by name; null or empty for all of them.</summary>
    public IReadOnlyList<string>? RequestedOutputs { get; init; }
}
