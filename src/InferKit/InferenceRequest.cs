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

    /// <summary>
    /// How long the caller will wait, counted from admission. Overrides the model's default timeout;
    /// <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> means no timeout at all. Any other negative value is
    /// refused with <see cref="InvalidInferenceRequestException"/>; one too long for the clock means no deadline.
    /// </summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>An absolute deadline. When both this and <see cref="Timeout"/> are set, the earlier wins.</summary>
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>The scheduling priority.</summary>
    public InferencePriority Priority { get; init; } = InferencePriority.Normal;

    /// <summary>The outputs wanted, by name; null or empty for all of them.</summary>
    public IReadOnlyList<string>? RequestedOutputs { get; init; }

    /// <summary>
    /// Lets the code that awaits this request's answer run on the thread that finished the batch, before the other
    /// requests of the batch are answered, instead of being queued to the thread pool. Default false.
    /// </summary>
    /// <remarks>
    /// This saves one thread-pool hop per request, which is measurable when the work per request is small (an HTTP
    /// endpoint answering a small model: InferKit's own protocol endpoints set it). Set it only when the code after the
    /// <c>await</c> is short and does not block: until it yields, the rest of the batch waits for their answers, and a
    /// blocking continuation delays every later caller in that batch. A success that would reach its caller after the
    /// deadline is still answered <see cref="InferenceStatus.DeadlineExceeded"/>, so a slow continuation can turn the
    /// answers after it into deadline misses, never into late answers.
    /// </remarks>
    public bool AllowSynchronousContinuation { get; init; }
}
