using System.Threading.Tasks.Sources;

namespace InferKit.Scheduling;

/// <summary>
/// The answer to an inline run that ended with an exception, completed through the same kind of source as a queued
/// request's answer (<see cref="PendingRequest"/>): an <see cref="OperationCanceledException"/> makes the task cancelled and
/// is itself what the caller catches, with its message and token, as for a queued request. Allocated only on that path.
/// </summary>
internal sealed class FailedAnswer : IValueTaskSource<InferenceResponse>
{
    private ManualResetValueTaskSourceCore<InferenceResponse> _core;

    private FailedAnswer(Exception exception)
    {
        _core.RunContinuationsAsynchronously = true;
        _core.SetException(exception);
    }

    /// <summary>A completed task that throws <paramref name="exception"/> (cancelled for an <see cref="OperationCanceledException"/>).</summary>
    public static ValueTask<InferenceResponse> Create(Exception exception)
    {
        var answer = new FailedAnswer(exception);
        return new ValueTask<InferenceResponse>(answer, answer._core.Version);
    }

    public InferenceResponse GetResult(short token) => _core.GetResult(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);
}
