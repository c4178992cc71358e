using InferKit.Tensors;

namespace InferKit.Telemetry;

/// <summary>
/// Receives audit records of inference requests (opt-in: <c>builder.AddAuditSink&lt;TSink&gt;()</c>). Records are
/// handed over on a background loop, one at a time, from a bounded buffer: a slow or blocked sink never slows
/// inference; when the buffer is full new records are dropped and counted in <c>inferkit.audit.dropped</c>.
/// </summary>
public interface IInferenceAuditSink
{
    /// <summary>Stores or forwards one record. Exceptions are logged (throttled) and the record is skipped.</summary>
    /// <param name="record">The record; it owns its data and stays valid after the call.</param>
    /// <param name="cancellationToken">Cancelled when InferKit shuts down and the flush timeout has passed.</param>
    ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken);
}

/// <summary>What one request asked, what it was answered, how long it took and how it ended.</summary>
public sealed class InferenceAuditRecord
{
    internal InferenceAuditRecord(string? requestId, string model, string version, InferenceOutcome outcome, RefusalReason refusalReason,
        string? message, TimeSpan latency, DateTimeOffset completedAt, string? instance, int batchSize, string? traceId,
        IReadOnlyList<AuditTensor> inputs, IReadOnlyList<AuditTensor> outputs)
    {
        RequestId = requestId;
        Model = model;
        Version = version;
        Outcome = outcome;
        RefusalReason = refusalReason;
        Message = message;
        Latency = latency;
        CompletedAt = completedAt;
        Instance = instance;
        BatchSize = batchSize;
        TraceId = traceId;
        Inputs = inputs;
        Outputs = outputs;
    }

    /// <summary>The caller's request id (<see cref="InferenceRequest.Id"/>), if it set one.</summary>
    public string? RequestId { get; }

    /// <summary>The model that served the request.</summary>
    public string Model { get; }

    /// <summary>The model version that served the request.</summary>
    public string Version { get; }

    /// <summary>How the request ended.</summary>
    public InferenceOutcome Outcome { get; }

    /// <summary>Why it was refused, when <see cref="Outcome"/> is <see cref="InferenceOutcome.Refused"/>.</summary>
    public RefusalReason RefusalReason { get; }

    /// <summary>The refusal, deadline or error message; null on success.</summary>
    public string? Message { get; }

    /// <summary>Time from admission to answer.</summary>
    public TimeSpan Latency { get; }

    /// <summary>When the request was answered (from the configured <see cref="TimeProvider"/>).</summary>
    public DateTimeOffset CompletedAt { get; }

    /// <summary>The instance that ran it, if it ran.</summary>
    public string? Instance { get; }

    /// <summary>Rows in the batch that ran it (0 when it did not run).</summary>
    public int BatchSize { get; }

    /// <summary>The W3C trace id of the request's span, when tracing was on.</summary>
    public string? TraceId { get; }

    /// <summary>The inputs as the caller sent them: name, type and shape, plus a copy of the data when <see cref="AuditOptions.CaptureTensorData"/> is set.</summary>
    public IReadOnlyList<AuditTensor> Inputs { get; }

    /// <summary>The outputs returned (empty unless the request succeeded), described like <see cref="Inputs"/>.</summary>
    public IReadOnlyList<AuditTensor> Outputs { get; }
}

/// <summary>One tensor in an audit record.</summary>
public sealed class AuditTensor
{
    internal AuditTensor(string name, TensorElementType elementType, long[] shape, Tensor? data)
    {
        Name = name;
        ElementType = elementType;
        Shape = shape;
        Data = data;
    }

    /// <summary>The tensor's name.</summary>
    public string Name { get; }

    /// <summary>Its element type.</summary>
    public TensorElementType ElementType { get; }

    /// <summary>Its shape.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>A copy of the tensor (owned by the record) when <see cref="AuditOptions.CaptureTensorData"/> is set; otherwise null.</summary>
    public Tensor? Data { get; }

    /// <summary>Describes a tensor, copying its data when <paramref name="copyData"/> is true.</summary>
    internal static AuditTensor Of(in Tensor tensor, bool copyData)
    {
        var shape = tensor.Shape.ToArray();
        Tensor? data = null;
        if (copyData)
        {
            data = tensor.ElementType == TensorElementType.String
                ? Tensor.Create(tensor.Name, tensor.GetStrings().ToArray(), shape)
                : Tensor.FromBytes(tensor.Name, tensor.ElementType, tensor.Bytes.ToArray(), shape);
        }

        return new AuditTensor(tensor.Name, tensor.ElementType, shape, data);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name}: {ElementType}{Tensor.FormatShape(Shape is long[] a ? a : Shape.ToArray())}";
}
