namespace InferKit;

/// <summary>A request was refused or missed its deadline; thrown only by <see cref="InferenceResponse.EnsureSuccess"/>.</summary>
public sealed class InferenceRefusedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public InferenceRefusedException(string model, InferenceStatus status, RefusalReason reason, TimeSpan? retryAfter, string? message)
        : base($"Model '{model}': {status}{(reason == RefusalReason.None ? string.Empty : $" ({reason})")}. {message}")
    {
        Model = model;
        Status = status;
        Reason = reason;
        RetryAfter = retryAfter;
    }

    /// <summary>The model called.</summary>
    public string Model { get; }

    /// <summary>How the request ended.</summary>
    public InferenceStatus Status { get; }

    /// <summary>Why it was refused.</summary>
    public RefusalReason Reason { get; }

    /// <summary>When it is worth trying again.</summary>
    public TimeSpan? RetryAfter { get; }
}

/// <summary>A request does not fit the model's signature: it names the model, the input, what was expected and what came.</summary>
public sealed class InvalidInferenceRequestException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public InvalidInferenceRequestException(string model, string? input, string message)
        : base(message)
    {
        Model = model;
        Input = input;
    }

    /// <summary>The model called.</summary>
    public string Model { get; }

    /// <summary>The offending input, when one is to blame.</summary>
    public string? Input { get; }
}

/// <summary>No model (or version) with this name is registered.</summary>
public sealed class ModelNotFoundException : KeyNotFoundException
{
    /// <summary>Creates the exception.</summary>
    public ModelNotFoundException(string model, string? version, IEnumerable<string> known)
        : base(version is null
            ? $"No model named '{model}' is registered. Known models: {Format(known)}."
            : $"Model '{model}' has no version '{version}'. Known versions: {Format(known)}.")
    {
        Model = model;
        Version = version;
    }

    /// <summary>The name asked for.</summary>
    public string Model { get; }

    /// <summary>The version asked for, if any.</summary>
    public string? Version { get; }

    private static string Format(IEnumerable<string> known)
    {
        var list = string.Join(", ", known);
        return list.Length == 0 ? "(none)" : list;
    }
}

/// <summary>A model failed to load (bad file, unsupported operator, provider error with no fallback).</summary>
public sealed class ModelLoadException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ModelLoadException(string model, string message, Exception? inner = null)
        : base($"Model '{model}' failed to load: {message}", inner)
    {
        Model = model;
    }

    /// <summary>The model.</summary>
    public string Model { get; }
}

/// <summary>A model instance failed while running a batch (after the retry on another instance, when one was possible).</summary>
public sealed class InferenceFailedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public InferenceFailedException(string model, string instance, Exception inner)
        : base($"Model '{model}' failed on instance {instance}: {inner?.Message}", inner)
    {
        Model = model;
        Instance = instance;
    }

    /// <summary>The model.</summary>
    public string Model { get; }

    /// <summary>The instance that failed last.</summary>
    public string Instance { get; }
}
