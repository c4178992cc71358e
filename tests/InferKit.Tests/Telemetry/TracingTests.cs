using System.Collections.Concurrent;
using System.Diagnostics;
using InferKit.Telemetry;

namespace InferKit.Tests.Telemetry;

/// <summary>Tests that attach listeners to the process-wide ActivitySource; they run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalListeners
{
    public const string Name = "InferKit global listeners";
}

[Collection(GlobalListeners.Name)]
public sealed class TracingTests : IDisposable
{
    private const string CallerSourceName = "InferKit.Tests.Caller";
    private static readonly ActivitySource CallerSource = new(CallerSourceName);
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private readonly ActivityListener _listener;

    public TracingTests()
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == InferKitTelemetry.Name || s.Name == CallerSourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => _stopped.Enqueue(a),
        };
        ActivitySource.AddActivityListener(_listener);
    }

    public void Dispose() => _listener.Dispose();

    private List<Activity> Spans(string name, string model) => _stopped
        .Where(a => a.OperationName == name && Equals(a.GetTagItem(InferKitTelemetry.ModelTag), model))
        .ToList();

    [Fact]
    public async Task Request_spans_are_children_of_the_callers_activity_and_link_to_the_one_batch_span_that_ran_them()
    {
        await using var h = TelemetryHarness.Create(o => o.Batching.MaxBatchSize = 8, model: "traced",
            computeTime: rows => TimeSpan.FromMilliseconds(10));
        await h.LoadAsync();

        Task<InferenceResponse> first;
        Task<InferenceResponse>[] queued;
        ActivityContext caller;
        using (var parent = CallerSource.StartActivity("caller"))
        {
            Assert.NotNull(parent);
            caller = parent.Context;
            first = await h.OccupyAsync(1);
            queued = new Task<InferenceResponse>[3];
            for (int i = 0; i < queued.Length; i++)
            {
                queued[i] = h.Send(i + 2).AsTask();

                // The request's span outlives the call: the caller's current activity is left as it was.
                Assert.Same(parent, Activity.Current);
            }
        }

        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            (await t).Dispose();
        }

        var requests = Spans(InferKitTelemetry.Spans.Request, "traced");
        var batches = Spans(InferKitTelemetry.Spans.Batch, "traced");
        Assert.Equal(4, requests.Count);
        Assert.Equal(2, batches.Count);

        // Every request span continues the caller's trace (W3C ids), with the outcome and version.
        Assert.All(requests, r =>
        {
            Assert.Equal(ActivityIdFormat.W3C, r.IdFormat);
            Assert.Equal(caller.TraceId, r.TraceId);
            Assert.Equal(caller.SpanId, r.ParentSpanId);
            Assert.Equal("success", r.GetTagItem(InferKitTelemetry.OutcomeTag));
            Assert.Equal("1", r.GetTagItem(InferKitTelemetry.VersionTag));
            Assert.Equal("traced/1/0", r.GetTagItem(InferKitTelemetry.InstanceTag));
        });

        var byId = requests.ToDictionary(r => (string)r.GetTagItem(InferKitTelemetry.Spans.RequestId)!);
        var single = batches.Single(b => Equals(b.GetTagItem(InferKitTelemetry.Spans.BatchRequests), 1));
        var shared = batches.Single(b => Equals(b.GetTagItem(InferKitTelemetry.Spans.BatchRequests), 3));

        // A batch of one request is a child of that request's span, and linked to it.
        Assert.Equal(byId["1"].SpanId, single.ParentSpanId);
        Assert.Equal(byId["1"].TraceId, single.TraceId);
        Assert.Equal([byId["1"].Context], single.Links.Select(l => l.Context));
        Assert.Equal([single.Context], byId["1"].Links.Select(l => l.Context));
        Assert.Equal(0.0, byId["1"].GetTagItem(InferKitTelemetry.Spans.QueueDurationMs));

        // A batch of three starts its own trace, linked to each request; each request links back to it.
        Assert.Equal(default, shared.ParentSpanId);
        Assert.NotEqual(caller.TraceId, shared.TraceId);
        Assert.Equal(3, shared.GetTagItem(InferKitTelemetry.Spans.BatchRows));
        Assert.Equal("traced/1/0", shared.GetTagItem(InferKitTelemetry.InstanceTag));
        Assert.Equal(
            new[] { "2", "3", "4" }.Select(id => byId[id].Context).OrderBy(c => c.SpanId.ToHexString()),
            shared.Links.Select(l => l.Context).OrderBy(c => c.SpanId.ToHexString()));
        foreach (var id in new[] { "2", "3", "4" })
        {
            var r = byId[id];
            Assert.Equal([shared.Context], r.Links.Select(l => l.Context));

            // The queue wait is visible: the 10 ms batch 1 ran on the fake clock, and the moment the batch started.
            Assert.Equal(10.0, r.GetTagItem(InferKitTelemetry.Spans.QueueDurationMs));
            Assert.Contains(r.Events, e => e.Name == InferKitTelemetry.Spans.DequeuedEvent);
            Assert.Equal(3, r.GetTagItem(InferKitTelemetry.Spans.BatchRows));
        }
    }

    [Fact]
    public async Task The_inline_fast_path_runs_the_batch_on_the_callers_thread_and_gives_it_back_its_current_activity()
    {
        await using var h = TelemetryHarness.Create(model: "inline");
        await h.LoadAsync();
        using var parent = CallerSource.StartActivity("caller");
        Assert.NotNull(parent);

        var pending = h.Send(7);
        Assert.True(pending.IsCompletedSuccessfully); // ran inline, on this thread
        (await pending).Dispose();
        Assert.Same(parent, Activity.Current);

        var request = Assert.Single(Spans(InferKitTelemetry.Spans.Request, "inline"));
        var batch = Assert.Single(Spans(InferKitTelemetry.Spans.Batch, "inline"));
        Assert.Equal(parent.SpanId, request.ParentSpanId);
        Assert.Equal(request.SpanId, batch.ParentSpanId);
        Assert.Equal([batch.Context], request.Links.Select(l => l.Context));
    }

    [Fact]
    public async Task Refused_and_failed_requests_end_their_spans_with_the_reason_or_the_error()
    {
        await using var h = TelemetryHarness.Create(o =>
        {
            o.Batching.MaxQueueLength = 1;
            o.Health.RetryOnAnotherInstance = false;
        }, model: "failing");
        await h.LoadAsync();

        h.Backend.Failure = () => new InvalidOperationException("boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        h.Backend.Failure = null;
        var first = await h.OccupyAsync(2);
        var queued = h.Send(4).AsTask();
        using (var refused = await h.Send(3))
        {
            Assert.Equal(RefusalReason.QueueFull, refused.RefusalReason);
        }

        h.Backend.Release();
        (await first).Dispose();
        (await queued).Dispose();

        var requests = Spans(InferKitTelemetry.Spans.Request, "failing").ToDictionary(r => (string)r.GetTagItem(InferKitTelemetry.Spans.RequestId)!);
        Assert.Equal("error", requests["1"].GetTagItem(InferKitTelemetry.OutcomeTag));
        Assert.Equal(ActivityStatusCode.Error, requests["1"].Status);
        Assert.Contains(requests["1"].Events, e => e.Name == "exception");
        Assert.Equal("refused", requests["3"].GetTagItem(InferKitTelemetry.OutcomeTag));
        Assert.Equal("queue_full", requests["3"].GetTagItem(InferKitTelemetry.ReasonTag));
        Assert.Equal(ActivityStatusCode.Unset, requests["3"].Status);
        var failedBatch = Spans(InferKitTelemetry.Spans.Batch, "failing").Single(b => b.Links.Any(l => l.Context == requests["1"].Context));
        Assert.Equal(ActivityStatusCode.Error, failedBatch.Status);
    }

    [Fact]
    public void The_activity_source_is_named_InferKit_and_carries_the_assembly_version()
    {
        var source = InferKitActivitySource.Source;
        Assert.Equal("InferKit", source.Name);
        var version = typeof(InferKitActivitySource).Assembly.GetName().Version!;
        Assert.StartsWith($"{version.Major}.{version.Minor}.{version.Build}", source.Version, StringComparison.Ordinal);
    }
}
