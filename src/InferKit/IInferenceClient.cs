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
    /// <remarks>
    /// A model that is not loaded yet (no host load, a load still running, a retry after a failed one) is loaded first.
    /// A request with a deadline (its timeout or deadline, else the model's <c>Batching.DefaultTimeout</c>) waits for
    /// that load only until its deadline less the model's <c>Batching.DeliveryMargin</c>; then it is refused with
    /// <see cref="RefusalReason.ModelNotReady"/> and a <see cref="InferenceResponse.RetryAfter"/> hint while the load goes
    /// on. Time spent waiting counts against its deadline. A request with no deadline at all waits for the whole load.
    /// </remarks>
    ValueTask<InferenceResponse> InferAsync(string model, InferenceRequest request, CancellationToken cancellationToken = default);

    /// <summary>Runs one request against a given version of a model (null for the current one).</summary>
    /// <inheritdoc cref="InferAsync(string, InferenceRequest, CancellationToken)"/>
    ValueTask<InferenceResponse> InferAsync(string model, string? version, InferenceRequest request, CancellationToken cancellationToken = default);
}
