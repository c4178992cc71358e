using System.Buffers;
using InferKit.Tensors;

namespace InferKit;

/// <summary>How a request ended.</summary>
public enum InferenceStatus
{
    /// <summary>The model ran; the outputs are available.</summary>
    Success = 0,
    /// <summary>The request was refused at admission or could not be served; see <see cref="InferenceResponse.RefusalReason"/>.</summary>
    Refused = 1,
    /// <summary>The deadline passed before the request could be answered; it was not run, or its result came too late and was discarded.</summary>
    DeadlineExceeded = 2,
}

/// <summary>Why a request was refused.</summary>
public enum RefusalReason
{
    /// <summary>Not refused.</summary>
    None = 0,
    /// <summary>The model's queue is full.</summary>
    QueueFull,
    /// <summary>The deadline cannot be met given the queue ahead and the measured batch latency.</summary>
    DeadlineInfeasible,
    /// <summary>The model has no healthy instance to run on.</summary>
    NoHealthyInstance,
    /// <summary>
    /// The model is not loaded yet (its load did not finish before the request's deadline, less the delivery margin), or
    /// failed to load.
    /// </summary>
    ModelNotReady,
    /// <summary>The host is shutting down and takes no new work.</summary>
    ShuttingDown,
    /// <summary>The system is overloaded (for example, every variant of an adaptive model is saturated).</summary>
    Overloaded,
}

/// <summary>
/// The answer to one request. On success it holds the output tensors, which view pooled buffers:
/// dispose the response when done so the buffers go back to the pool. Expected refusals are not
/// exceptions: check <see cref="IsSuccess"/> or call <see cref="EnsureSuccess"/>.
/// </summary>
public sealed class InferenceResponse : IDisposable
{
    // The outputs. The first _pooled of them view buffers rented from ArrayPool<byte>.Shared (numeric) or
    // ArrayPool<string>.Shared (strings), one buffer per output, returned by Dispose.
    private Tensor[] _outputs;
    private int _pooled;
    private int _disposed;
    private string? _message;
    private Func<InferenceResponse, double, double, string>? _format;
    private double _arg0;
    private double _arg1;

    internal InferenceResponse(string model, string? version, string? requestId)
    {
        Model = model;
        Version = version;
        RequestId = requestId;
        _outputs = [];
    }

    /// <summary>The model (or virtual model) that was called.</summary>
    public string Model { get; internal set; }

    /// <summary>The version that served, when the model is versioned.</summary>
    public string? Version { get; internal set; }

    /// <summary>The request's id, if it had one.</summary>
    public string? RequestId { get; }

    /// <summary>How the request ended.</summary>
    public InferenceStatus Status { get; private set; }

    /// <summary>True when the model ran and the outputs are available.</summary>
    public bool IsSuccess => Status == InferenceStatus.Success;

    /// <summary>Why the request was refused, or <see cref="RefusalReason.None"/>.</summary>
    public RefusalReason RefusalReason { get; private set; }

    /// <summary>When it is worth trying again, for refusals that have a hint.</summary>
    public TimeSpan? RetryAfter { get; private set; }

    /// <summary>A human-readable explanation for a refusal or deadline miss.</summary>
    /// <remarks>Formatted on first read: refusals under overload are answered without formatting text nobody reads.</remarks>
    public string? Message
    {
        get => _message ??= _format?.Invoke(this, _arg0, _arg1);
        private set => _message = value;
    }

    /// <summary>The instance that ran the request.</summary>
    public string? Instance { get; internal set; }

    /// <summary>The model that actually answered: the real model behind a cascade stage or adaptive variant, else <see cref="Model"/>.</summary>
    public string? AnsweredBy { get; internal set; }

    /// <summary>For a cascade, the highest 1-based stage that answered a row of this request; 0 otherwise.</summary>
    public int Stage { get; internal set; }

    /// <summary>For a cascade, the 1-based stage that answered each row; empty otherwise.</summary>
    public IReadOnlyList<int> RowStages { get; internal set; } = [];

    /// <summary>Time spent waiting in the queue.</summary>
    public TimeSpan QueueTime { get; internal set; }

    /// <summary>Time the batch that carried this request spent running.</summary>
    public TimeSpan ComputeTime { get; internal set; }

    /// <summary>The number of rows in the batch that carried this request.</summary>
    public int BatchSize { get; internal set; }

    /// <summary>A note from a virtual model (for example, that a cascade's later stage could not answer some rows).</summary>
    public string? Note { get; internal set; }

    /// <summary>The output tensors.</summary>
    /// <exception cref="InvalidOperationException">The request did not succeed, or the response was disposed.</exception>
    public IReadOnlyList<Tensor> Outputs
    {
        get
        {
            ThrowIfUnusable();
            return _outputs;
        }
    }

    /// <summary>The output with this name.</summary>
    /// <exception cref="KeyNotFoundException">No output has this name.</exception>
    public Tensor this[string name]
    {
        get
        {
            if (TryGetOutput(name, out var t))
            {
                return t;
            }

            var names = new string[_outputs.Length];
            for (int i = 0; i < names.Length; i++)
            {
                names[i] = _outputs[i].Name;
            }

            throw new KeyNotFoundException($"Model '{Model}' returned no output named '{name}'. Outputs: {string.Join(", ", names)}.");
        }
    }

    /// <summary>Finds an output by name.</summary>
    public bool TryGetOutput(string name, out Tensor tensor)
    {
        ThrowIfUnusable();
        foreach (var t in _outputs)
        {
            if (string.Equals(t.Name, name, StringComparison.Ordinal))
            {
                tensor = t;
                return true;
            }
        }

        tensor = default;
        return false;
    }

    /// <summary>Throws <see cref="InferenceRefusedException"/> unless the request succeeded; returns this response otherwise.</summary>
    public InferenceResponse EnsureSuccess()
    {
        if (Status != InferenceStatus.Success)
        {
            throw new InferenceRefusedException(Model, Status, RefusalReason, RetryAfter, Message);
        }

        return this;
    }

    /// <summary>Returns pooled output buffers to the pool. Tensors read from this response are invalid afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        var outputs = _outputs;
        int pooled = _pooled;
        _outputs = [];
        _pooled = 0;
        for (int i = 0; i < pooled; i++)
        {
            switch (outputs[i].DataObject)
            {
                case byte[] bytes:
                    ArrayPool<byte>.Shared.Return(bytes);
                    break;
                case string[] strings:
                    ArrayPool<string>.Shared.Return(strings, clearArray: true);
                    break;
            }
        }
    }

    internal static InferenceResponse Refused(string model, string? requestId, RefusalReason reason, TimeSpan? retryAfter, string message) =>
        new(model, null, requestId) { Status = InferenceStatus.Refused, RefusalReason = reason, RetryAfter = retryAfter, Message = message };

    internal static InferenceResponse Expired(string model, string? requestId, string message) =>
        new(model, null, requestId) { Status = InferenceStatus.DeadlineExceeded, Message = message };

    /// <summary>A refusal whose message is formatted from two numbers when it is first read (a static, non-capturing format).</summary>
    internal static InferenceResponse Refused(string model, string? requestId, RefusalReason reason, TimeSpan? retryAfter, Func<InferenceResponse, double, double, string> format, double arg0, double arg1) =>
        new(model, null, requestId) { Status = InferenceStatus.Refused, RefusalReason = reason, RetryAfter = retryAfter, _format = format, _arg0 = arg0, _arg1 = arg1 };

    /// <summary>A deadline miss whose message is formatted from two numbers when it is first read.</summary>
    internal static InferenceResponse Expired(string model, string? requestId, Func<InferenceResponse, double, double, string> format, double arg0, double arg1) =>
        new(model, null, requestId) { Status = InferenceStatus.DeadlineExceeded, _format = format, _arg0 = arg0, _arg1 = arg1 };

    /// <summary>
    /// Makes a member's response the answer of the virtual model <paramref name="model"/> that was called, whose one version
    /// is <paramref name="version"/> (a response that names a version names the virtual model's, not the member's, which
    /// the virtual model does not accept). A refusal's message is formatted first, so it still names the member that
    /// refused rather than the virtual model.
    /// </summary>
    internal void RenameTo(string model, string version)
    {
        if (Status != InferenceStatus.Success)
        {
            _ = Message;
        }

        Model = model;
        if (Version is not null)
        {
            Version = version;
        }
    }

    /// <summary>Makes room for <paramref name="count"/> outputs, added next by <see cref="AddPooledOutput"/>.</summary>
    internal void PrepareOutputs(int count)
    {
        _outputs = count == 0 ? [] : new Tensor[count];
        _pooled = 0;
    }

    /// <summary>
    /// Adds the next output. Its data is a buffer of its own rented from <see cref="ArrayPool{T}.Shared"/> (bytes for a
    /// numeric tensor, strings for a string tensor), which this response now owns and returns when disposed.
    /// </summary>
    internal void AddPooledOutput(Tensor tensor) => _outputs[_pooled++] = tensor;

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (Status != InferenceStatus.Success)
        {
            throw new InvalidOperationException($"Model '{Model}' did not produce outputs: {Status} ({RefusalReason}). {Message}");
        }
    }
}
