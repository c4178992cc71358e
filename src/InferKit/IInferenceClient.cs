namespace InferKit;

/// <summary>The in-process entry point: runs requests against registered models, cascades and adaptive models.</summary>
public interface IInferenceClient
{
    /// <summary>Runs one request against the current version of a model.</summary>
    /// <param name="model">The model name (a real model, a cascade or an adaptive model).</param>
    /// <param name="request">The inputs and scheduling hints.</param>
    /// <param name="cancellationToken">Removes the request from the queue, or abandons it while it runs.</param>
    /// <returns>A response to dispose: success with outputs, or a refusal or deadline miss with a reason.</returns>
    /// <exception cref="ModelNotFoundException">No model has this name.</exception>
    /// <exception cref="InvalidInferenceRequestException">The request does not fit the model's signature.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    ValueTask<InferenceResponse> InferAsync(string model, InferenceRequest request, CancellationToken cancellationToken = default);

    /// <summary>Runs one request against a given version of a model (null for the current one).</summary>
    /// <inheritdoc cref="InferAsync(string, InferenceRequest, CancellationToken)"/>
    ValueTask<InferenceResponse> InferAsync(string model, string? version, InferenceRequest request, CancellationToken cancellationToken = default);
}
