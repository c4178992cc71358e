namespace InferKit.Telemetry;

/// <summary>
/// Names of InferKit's meter, activity source, instruments, span attributes and tags. Subscribe with
/// <c>.AddMeter(InferKitTelemetry.Name)</c> and <c>.AddSource(InferKitTelemetry.Name)</c> in OpenTelemetry.
/// </summary>
public static class InferKitTelemetry
{
    /// <summary>The name of the Meter and the ActivitySource.</summary>
    public const string Name = "InferKit";

    /// <summary>Tag: the model name.</summary>
    public const string ModelTag = "inferkit.model";

    /// <summary>Tag: the model version.</summary>
    public const string VersionTag = "inferkit.model.version";

    /// <summary>Tag: the instance id.</summary>
    public const string InstanceTag = "inferkit.instance";

    /// <summary>Tag: how a request ended (success, refused, deadline_exceeded, cancelled, error).</summary>
    public const string OutcomeTag = "inferkit.outcome";

    /// <summary>Tag: why a request was refused (queue_full, deadline_infeasible, no_healthy_instance, model_not_ready, shutting_down, overloaded).</summary>
    public const string ReasonTag = "reason";

    /// <summary>Tag of <c>inferkit.model.state</c>: a lifecycle state (not_loaded, loading, ready, failed, draining, unloaded).</summary>
    public const string StateTag = "inferkit.model.state";

    /// <summary>Tag of <c>inferkit.alerts.active</c>: the alert rule's name.</summary>
    public const string RuleTag = "inferkit.alert.rule";

    /// <summary>Instrument names (lower-case, dotted, UCUM units).</summary>
    public static class Instruments
    {
        /// <summary>Histogram (s): time from admission to answer, tagged with the outcome. Its count is the request count.</summary>
        public const string RequestDuration = "inferkit.request.duration";

        /// <summary>Histogram (s): time a request waited before its batch started.</summary>
        public const string QueueDuration = "inferkit.request.queue.duration";

        /// <summary>Histogram (s): time one batch ran on an instance, tagged with the instance.</summary>
        public const string ComputeDuration = "inferkit.batch.compute.duration";

        /// <summary>Histogram ({row}): rows per batch.</summary>
        public const string BatchSize = "inferkit.batch.size";

        /// <summary>Counter ({request}): requests refused, tagged with the reason.</summary>
        public const string Rejected = "inferkit.requests.rejected";

        /// <summary>
        /// Counter ({request}): results that were ready before the deadline but reached the caller after it (a slow hand-over
        /// through the thread pool), or within the read margin (at most 20 µs) before it, and were answered as
        /// DeadlineExceeded instead. <c>inferkit.request.duration</c> counted them
        /// as ok when they were ready.
        /// </summary>
        public const string DiscardedLate = "inferkit.requests.discarded_late";

        /// <summary>Gauge ({request}): requests waiting per model version.</summary>
        public const string QueueLength = "inferkit.queue.length";

        /// <summary>Up-down counter ({batch}): batches running per instance.</summary>
        public const string InstanceInflight = "inferkit.instance.inflight";

        /// <summary>
        /// Up-down counter ({instance}): instances loaded per model version. (Not "inferkit.instance.count": Prometheus
        /// reserves the "_count" suffix for histograms and summaries.)
        /// </summary>
        public const string InstanceCount = "inferkit.instances";

        /// <summary>Histogram (s): time to load and warm a model version.</summary>
        public const string ModelLoadDuration = "inferkit.model.load.duration";

        /// <summary>Gauge: 1 for a model's current lifecycle state and 0 for the others, one series per state.</summary>
        public const string ModelState = "inferkit.model.state";

        /// <summary>Counter ({record}): audit records dropped because a sink's buffer was full.</summary>
        public const string AuditDropped = "inferkit.audit.dropped";

        /// <summary>Gauge: 1 while an alert rule fires for a model, else 0.</summary>
        public const string AlertsActive = "inferkit.alerts.active";
    }

    /// <summary>Span names and attributes of the ActivitySource.</summary>
    public static class Spans
    {
        /// <summary>One request, from admission to answer; a child of <c>Activity.Current</c> when the request was made.</summary>
        public const string Request = "inferkit.request";

        /// <summary>One batch run on an instance; linked to (and linked from) every request span it carried.</summary>
        public const string Batch = "inferkit.batch";

        /// <summary>Event on a request span: its batch started (the end of its queue wait).</summary>
        public const string DequeuedEvent = "inferkit.dequeued";

        /// <summary>Event on a batch span: the run failed on one instance and is retried on another.</summary>
        public const string RetryEvent = "inferkit.retry";

        /// <summary>Attribute (double, milliseconds): time the request waited before its batch started.</summary>
        public const string QueueDurationMs = "inferkit.queue.duration_ms";

        /// <summary>Attribute: the caller's request id.</summary>
        public const string RequestId = "inferkit.request.id";

        /// <summary>Attribute (int): rows in the batch.</summary>
        public const string BatchRows = "inferkit.batch.rows";

        /// <summary>Attribute (int): requests in the batch.</summary>
        public const string BatchRequests = "inferkit.batch.requests";
    }
}
