using System.Diagnostics;
using InferKit.Models;
using InferKit.Scheduling;

namespace InferKit.Telemetry;

/// <summary>
/// The telemetry of one model version: what the scheduler and its batches call on the request path. Each call checks
/// whether anything listens before it builds a tag, a span or a record, so it costs a few branches when nothing does.
/// </summary>
internal sealed class ModelTelemetry
{
    private readonly InferKitMetrics _hub;
    private readonly TagList _tags;
    private readonly long[] _refusals = new long[TelemetryNames.ReasonCount];
    private readonly long[] _refusalsLogged = new long[TelemetryNames.ReasonCount];
    private volatile ModelScheduler? _scheduler;
    private TimeProvider _time;

    public ModelTelemetry(InferKitMetrics hub, string model, string version)
    {
        _hub = hub;
        Model = model;
        Version = version;
        _tags = InferKitMetrics.ModelTags(model, version);
        _time = hub.Time;
        if (hub.Alerts.Enabled)
        {
            Window = new RequestWindow(hub.Alerts.Slots);
        }
    }

    public string Model { get; }

    public string Version { get; }

    /// <summary>The model and version tags.</summary>
    public TagList Tags => _tags;

    /// <summary>The sliding window the alert rules read; null without rules.</summary>
    public RequestWindow? Window { get; }

    public bool IsAttached => _scheduler is not null;

    public int QueueLength => _scheduler?.QueueLength ?? 0;

    /// <summary>Connects the scheduler serving this version (its queue length feeds the gauge and alerts).</summary>
    public void Attach(ModelScheduler scheduler)
    {
        _time = scheduler.Time;
        _scheduler = scheduler;
    }

    public void Detach(ModelScheduler scheduler)
    {
        if (ReferenceEquals(_scheduler, scheduler))
        {
            _scheduler = null;
        }
    }

    public long RefusalCount(RefusalReason reason) => Interlocked.Read(ref _refusals[(int)reason]);

    // ---- requests ----

    /// <summary>
    /// Starts the span of one request as a child of <see cref="Activity.Current"/> (so W3C context from ASP.NET Core flows
    /// in); null when nothing listens. The caller's <see cref="Activity.Current"/> is left as it was: the span outlives this call.
    /// </summary>
    public Activity? StartRequest(InferenceRequest request)
    {
        var source = InferKitActivitySource.Source;
        if (!source.HasListeners())
        {
            return null;
        }

        var previous = Activity.Current;
        var activity = source.SafeStartActivity(InferKitTelemetry.Spans.Request, ActivityKind.Internal);
        if (activity is null)
        {
            return null;
        }

        Activity.Current = previous;
        if (activity.IsAllDataRequested)
        {
            activity.SetTag(InferKitTelemetry.ModelTag, Model);
            activity.SetTag(InferKitTelemetry.VersionTag, Version);
            if (request.Id is not null)
            {
                activity.SetTag(InferKitTelemetry.Spans.RequestId, request.Id);
            }
        }

        return activity;
    }

    /// <summary>Counts a refusal (metric by reason, aggregate log); the request itself ends through <see cref="RequestEnded"/>.</summary>
    public void CountRefusal(RefusalReason reason)
    {
        Interlocked.Increment(ref _refusals[(int)reason]);
        var rejected = _hub.Rejected;
        if (rejected.Enabled)
        {
            var tags = _tags;
            tags.Add(InferKitTelemetry.ReasonTag, TelemetryNames.Reason(reason));
            rejected.SafeAdd(1, tags);
        }

        _hub.RequestSummary();
    }

    /// <summary>Counts a result discarded because it reached its caller after the deadline.</summary>
    public void CountDiscardedLate()
    {
        var counter = _hub.DiscardedLate;
        if (counter.Enabled)
        {
            counter.SafeAdd(1, _tags);
        }
    }

    /// <summary>
    /// One request ended: records its duration by outcome, feeds the alert window, ends its span and offers an audit
    /// record. <paramref name="admitted"/> is the admission timestamp of the scheduler's clock (0 when it never reached one).
    /// </summary>
    public void RequestEnded(InferenceRequest request, long admitted, Activity? activity, InferenceOutcome outcome, InferenceResponse? response, Exception? error, long ended = 0)
    {
        var hub = _hub;
        var window = Window;
        bool duration = hub.RequestDuration.Enabled;
        bool audit = hub.AuditEnabled && hub.ShouldSample();
        if (!duration && window is null && activity is null && !audit)
        {
            return;
        }

        var time = _time;
        var elapsed = admitted == 0 ? TimeSpan.Zero : ended == 0 ? time.GetElapsedTime(admitted) : time.GetElapsedTime(admitted, ended);
        double seconds = elapsed.TotalSeconds;
        if (duration)
        {
            var tags = _tags;
            tags.Add(InferKitTelemetry.OutcomeTag, TelemetryNames.Outcome(outcome));
            hub.RequestDuration.SafeRecord(seconds, tags);
        }

        window?.Record(outcome, seconds);
        string? traceId = null;
        if (activity is not null)
        {
            traceId = activity.TraceId.ToHexString();
            EndRequestSpan(activity, outcome, response, error);
        }

        if (audit)
        {
            hub.Audit(CreateRecord(request, outcome, response, error, elapsed, time.GetUtcNow(), traceId, hub.CaptureTensorData), _tags);
        }
    }

    /// <summary>A refusal answered before any scheduler saw the request (the model is not loaded): counted and ended.</summary>
    public InferenceResponse Refused(InferenceRequest request, InferenceResponse response)
    {
        CountRefusal(response.RefusalReason);
        RequestEnded(request, 0, null, InferenceOutcome.Refused, response, null);
        return response;
    }

    // ---- batches ----

    /// <summary>
    /// A batch starts: records each request's queue wait, and when tracing starts the batch span (linked to every
    /// request span, and each request span linked back to it). Returns the span (or null) and the caller's
    /// <see cref="Activity.Current"/>, which <see cref="BatchEnded"/> restores.
    /// </summary>
    public Activity? BatchStarted(Batch batch, long started, out Activity? saved)
    {
        saved = null;
        var hub = _hub;
        bool queue = hub.QueueDuration.Enabled;
        var source = InferKitActivitySource.Source;
        bool tracing = source.HasListeners();
        if (!queue && !tracing)
        {
            return null;
        }

        var time = _time;
        ActivityLink[]? links = null;
        int linked = 0;
        for (int j = 0; j < batch.Count; j++)
        {
            var request = batch[j];
            double seconds = time.GetElapsedTime(request.Enqueued, started).TotalSeconds;
            if (queue)
            {
                hub.QueueDuration.SafeRecord(seconds, _tags);
            }

            if (request.Activity is { } span)
            {
                if (span.IsAllDataRequested)
                {
                    span.SetTag(InferKitTelemetry.Spans.QueueDurationMs, seconds * 1000);
                    span.AddEvent(new ActivityEvent(InferKitTelemetry.Spans.DequeuedEvent));
                }

                (links ??= new ActivityLink[batch.Count])[linked++] = new ActivityLink(span.Context);
            }
        }

        if (!tracing)
        {
            return null;
        }

        if (links is not null && linked < links.Length)
        {
            Array.Resize(ref links, linked);
        }

        // A batch of one request is a child of that request's span; a batch of several is the root of its own trace,
        // linked to each request (the requests come from many traces).
        var parent = batch.Count == 1 && batch[0].Activity is { } only ? only.Context : default;
        saved = Activity.Current;
        if (saved is not null)
        {
            Activity.Current = null;
        }

        var activity = source.SafeStartActivity(InferKitTelemetry.Spans.Batch, ActivityKind.Internal, parent, links);
        if (activity is null)
        {
            if (saved is not null)
            {
                Activity.Current = saved;
            }

            saved = null;
            return null;
        }

        if (activity.IsAllDataRequested)
        {
            activity.SetTag(InferKitTelemetry.ModelTag, Model);
            activity.SetTag(InferKitTelemetry.VersionTag, Version);
            activity.SetTag(InferKitTelemetry.Spans.BatchRows, batch.Rows);
            activity.SetTag(InferKitTelemetry.Spans.BatchRequests, batch.Count);
        }

        var link = new ActivityLink(activity.Context);
        for (int j = 0; j < batch.Count; j++)
        {
            batch[j].Activity?.AddLink(link);
        }

        return activity;
    }

    /// <summary>The batch failed on <paramref name="failed"/> and runs again on another instance.</summary>
    public static void BatchRetried(Activity? activity, ModelInstance failed, Exception error)
    {
        if (activity is { IsAllDataRequested: true })
        {
            activity.AddEvent(new ActivityEvent(InferKitTelemetry.Spans.RetryEvent, tags: new ActivityTagsCollection
            {
                { InferKitTelemetry.InstanceTag, failed.Id },
                { "exception.type", error.GetType().FullName },
                { "exception.message", error.Message },
            }));
        }
    }

    /// <summary>A batch ran: compute time and size (only successful runs are measured).</summary>
    public void BatchCompleted(ModelInstance instance, int rows, double seconds)
    {
        var hub = _hub;
        if (hub.ComputeDuration.Enabled)
        {
            var tags = _tags;
            tags.Add(InferKitTelemetry.InstanceTag, instance.Id);
            hub.ComputeDuration.SafeRecord(seconds, tags);
        }

        if (hub.BatchSize.Enabled)
        {
            hub.BatchSize.SafeRecord(rows, _tags);
        }
    }

    /// <summary>Ends the batch span and gives the thread back its <see cref="Activity.Current"/>.</summary>
    public static void BatchEnded(Activity? activity, Activity? saved, ModelInstance instance, Exception? error)
    {
        if (activity is null)
        {
            return;
        }

        if (activity.IsAllDataRequested)
        {
            activity.SetTag(InferKitTelemetry.InstanceTag, instance.Id);
            if (error is not null)
            {
                activity.SetStatus(ActivityStatusCode.Error, error.Message);
                activity.SafeAddException(error);
            }
        }

        activity.SafeStop();
        if (!ReferenceEquals(Activity.Current, saved))
        {
            Activity.Current = saved;
        }
    }

    // ---- aggregate logs ----

    internal long TakeUnloggedRefusals(int reason)
    {
        long now = Interlocked.Read(ref _refusals[reason]);
        long delta = now - _refusalsLogged[reason];
        _refusalsLogged[reason] = now;
        return delta;
    }

    internal bool HasUnloggedRefusals()
    {
        for (int r = 0; r < _refusals.Length; r++)
        {
            if (Interlocked.Read(ref _refusals[r]) != _refusalsLogged[r])
            {
                return true;
            }
        }

        return false;
    }

    private static void EndRequestSpan(Activity activity, InferenceOutcome outcome, InferenceResponse? response, Exception? error)
    {
        if (activity.IsAllDataRequested)
        {
            activity.SetTag(InferKitTelemetry.OutcomeTag, TelemetryNames.Outcome(outcome));
            if (response is not null)
            {
                if (response.Instance is not null)
                {
                    activity.SetTag(InferKitTelemetry.InstanceTag, response.Instance);
                    activity.SetTag(InferKitTelemetry.Spans.BatchRows, response.BatchSize);
                }

                if (outcome == InferenceOutcome.Refused)
                {
                    activity.SetTag(InferKitTelemetry.ReasonTag, TelemetryNames.Reason(response.RefusalReason));
                }
                else if (outcome == InferenceOutcome.DeadlineExceeded)
                {
                    activity.SetStatus(ActivityStatusCode.Error, response.Message);
                }
            }

            if (error is not null && outcome == InferenceOutcome.Error)
            {
                activity.SetStatus(ActivityStatusCode.Error, error.Message);
                activity.SafeAddException(error);
            }
        }

        // Stop sets Activity.Current to the span's parent on this thread (a worker, a canceller, or the caller when run
        // inline): give the thread back what it had, which is the batch span or the caller's own activity.
        var current = Activity.Current;
        activity.SafeStop();
        if (!ReferenceEquals(Activity.Current, current))
        {
            Activity.Current = current;
        }
    }

    private InferenceAuditRecord CreateRecord(InferenceRequest request, InferenceOutcome outcome, InferenceResponse? response, Exception? error,
        TimeSpan latency, DateTimeOffset completedAt, string? traceId, bool copyData)
    {
        var inputs = request.Inputs;
        var inputRecords = new AuditTensor[inputs.Count];
        for (int i = 0; i < inputRecords.Length; i++)
        {
            inputRecords[i] = AuditTensor.Of(inputs[i], copyData);
        }

        AuditTensor[] outputRecords = [];
        if (response is { IsSuccess: true })
        {
            var outputs = response.Outputs;
            outputRecords = new AuditTensor[outputs.Count];
            for (int i = 0; i < outputRecords.Length; i++)
            {
                outputRecords[i] = AuditTensor.Of(outputs[i], copyData);
            }
        }

        string? message = error?.Message ?? response?.Message;
        return new InferenceAuditRecord(request.Id, Model, Version, outcome, response?.RefusalReason ?? RefusalReason.None, message,
            latency, completedAt, response?.Instance, response?.BatchSize ?? 0, traceId, inputRecords, outputRecords);
    }
}
