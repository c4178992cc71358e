using System.ComponentModel.DataAnnotations;

namespace InferKit.Scheduling;

/// <summary>How one model's requests are queued and joined into batches.</summary>
public sealed class BatchingOptions
{
    /// <summary>Join requests into batches when the model has a batch axis. False runs one request per run.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The most rows one batch may carry. A single request with more rows runs alone.</summary>
    [Range(1, 65536)]
    public int MaxBatchSize { get; set; } = 32;

    /// <summary>
    /// How long the oldest queued request may wait for more to join it. Zero (the default) takes what is
    /// queued when an instance is free and does not wait.
    /// </summary>
    public TimeSpan MaxQueueDelay { get; set; } = TimeSpan.Zero;

    /// <summary>Batch sizes the model runs best at; a batch is cut to the largest of these that is queued, when one is.</summary>
    public IList<int> PreferredBatchSizes { get; } = new List<int>();

    /// <summary>The most requests waiting; beyond it a request is refused at once with <see cref="RefusalReason.QueueFull"/>.</summary>
    [Range(1, 10_000_000)]
    public int MaxQueueLength { get; set; } = 4096;

    /// <summary>The timeout for requests that carry neither a timeout nor a deadline; null for none.</summary>
    public TimeSpan? DefaultTimeout { get; set; }

    /// <summary>The most consecutive batches a non-empty lower-priority lane may be passed over before it is served first.</summary>
    [Range(1, 1000)]
    public int StarvationLimit { get; set; } = 4;

    /// <summary>
    /// Let a lone caller run its request on its own thread when the queue is empty and an instance is idle,
    /// saving the thread hop (the default). Callers that start many requests without awaiting them in between
    /// should switch this off so the requests queue and batch. The caller's cancellation token reaches such a run: a
    /// cancel stops it (the backend is asked to terminate) and the caller is answered as cancelled.
    /// </summary>
    public bool AllowInlineExecution { get; set; } = true;

    /// <summary>
    /// Time kept in hand for handing a result to its caller (a thread-pool hop). A result ready later than the deadline
    /// minus this margin is answered as DeadlineExceeded rather than delivered late, and admission plans with it.
    /// </summary>
    public TimeSpan DeliveryMargin { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// Refuse at admission a request whose deadline cannot be met given the queue ahead and the measured batch latency.
    /// The latency is learned from batches that run, so once no batch has run for 100 ms, and the model is idle (nothing
    /// queued, an instance free), one such request per 100 ms is admitted anyway to measure it again: an estimate made
    /// stale by one slow run cannot refuse all traffic for good. That request still never gets a late answer.
    /// </summary>
    public bool RefuseInfeasibleDeadlines { get; set; } = true;

    /// <summary>Learn the batch latency per size and adjust the batch cap to a latency target (opt-in).</summary>
    public AdaptiveBatchingOptions Adaptive { get; } = new();

    /// <summary>Pad variable-length inputs so requests of different lengths share a batch (opt-in).</summary>
    public PaddingOptions Padding { get; } = new();
}

/// <summary>Adaptive batch cap: additive increase while batches stay under the target, about 10% back-off when one exceeds it.</summary>
public sealed class AdaptiveBatchingOptions
{
    /// <summary>Switches the adaptive cap on.</summary>
    public bool Enabled { get; set; }

    /// <summary>The batch latency to stay under.</summary>
    public TimeSpan LatencyTarget { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>The cap to start from (at most <see cref="BatchingOptions.MaxBatchSize"/>).</summary>
    [Range(1, 65536)]
    public int InitialBatchSize { get; set; } = 1;
}

/// <summary>
/// Padding of variable-length inputs: requests whose dynamic non-batch dimensions differ are padded up to
/// the longest in the batch, and the padding is cut away from outputs that share the padded axis. Dynamic axes that share
/// a dimension name are one padded axis, and a request must give them one length. Unnamed dynamic axes at the same
/// position of inputs of the same rank (input_ids and attention_mask [batch, ?]) may be one axis: a request that gives
/// them different lengths is not joined with others, and runs as it came.
/// </summary>
public sealed class PaddingOptions
{
    /// <summary>Switches padding on.</summary>
    public bool Enabled { get; set; }

    /// <summary>The pad value per input name; inputs not listed pad with 0 (an attention mask pads with 0 too).</summary>
    public IDictionary<string, double> PadValues { get; } = new Dictionary<string, double>(StringComparer.Ordinal);

    /// <summary>
    /// For outputs whose padded axis cannot be matched by symbolic dimension name: output name → (axis, input name, input axis).
    /// Outputs whose dimension names match a padded input dimension are trimmed without being listed.
    /// </summary>
    public IDictionary<string, PaddedAxis> OutputAxes { get; } = new Dictionary<string, PaddedAxis>(StringComparer.Ordinal);

    /// <summary>The longest padded length accepted; longer requests are refused as invalid.</summary>
    [Range(1, int.MaxValue)]
    public int MaxPaddedLength { get; set; } = 4096;
}

/// <summary>An output axis that follows a padded input axis.</summary>
/// <param name="OutputAxis">The axis of the output to trim.</param>
/// <param name="Input">The input whose length it follows.</param>
/// <param name="InputAxis">The axis of that input.</param>
public sealed record PaddedAxis(int OutputAxis, string Input, int InputAxis);
