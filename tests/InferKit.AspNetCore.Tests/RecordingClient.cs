using System.Collections.Concurrent;

namespace InferKit.AspNetCore.Tests;

/// <summary>
/// Wraps the real client: records each request as the endpoint built it, and signals when the scheduler has admitted
/// it (the scheduler admits synchronously, so that is when InferAsync hands back its pending task).
/// </summary>
internal sealed class RecordingClient(IInferenceClient inner) : IInferenceClient
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _admitted = new(StringComparer.Ordinal);

    public ConcurrentQueue<(string Model, string? Version, InferenceRequest Request)> Requests { get; } = new();

    /// <summary>
    /// Completes once the request with this id has been admitted (or answered at once); throws a <see cref="TimeoutException"/>
    /// after 30 s, so a test whose request never comes fails rather than hangs.
    /// </summary>
    public Task Admitted(string id) => Signal(id).Task.WaitAsync(TimeSpan.FromSeconds(30));

    public ValueTask<InferenceResponse> InferAsync(string model, InferenceRequest request, CancellationToken cancellationToken = default) =>
        InferAsync(model, null, request, cancellationToken);

    public async ValueTask<InferenceResponse> InferAsync(string model, string? version, InferenceRequest request, CancellationToken cancellationToken = default)
    {
        Requests.Enqueue((model, version, request));
        var pending = inner.InferAsync(model, version, request, cancellationToken);
        if (request.Id is not null)
        {
            Signal(request.Id).TrySetResult();
        }

        return await pending.ConfigureAwait(false);
    }

    private TaskCompletionSource Signal(string id) =>
        _admitted.GetOrAdd(id, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
