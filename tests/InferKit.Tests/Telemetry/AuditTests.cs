using System.Collections.Concurrent;
using InferKit.Telemetry;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Telemetry;

public sealed class AuditTests
{
    /// <summary>A sink that records what it is given and can hold its writes at a gate.</summary>
    private sealed class RecordingSink : IInferenceAuditSink
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private Gate? _gate;

        public ConcurrentQueue<InferenceAuditRecord> Records { get; } = new();

        public Func<InferenceAuditRecord, Exception?>? Failure { get; set; }

        /// <summary>Completes when the first write has started.</summary>
        public Task Entered => _entered.Task;

        public void Hold() => _gate = new Gate("the audit sink's writes");

        public void Release() => _gate?.Open();

        public async ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken)
        {
            Records.Enqueue(record);
            _entered.TrySetResult();
            if (_gate is { } gate)
            {
                await gate.WaitAsync(cancellationToken);
            }

            if (Failure?.Invoke(record) is { } error)
            {
                throw error;
            }
        }
    }

    private static string[] Ids(RecordingSink sink) => sink.Records.Select(r => r.RequestId!).ToArray();

    [Fact]
    public async Task A_blocked_sink_does_not_hold_up_requests_and_the_records_it_cannot_take_are_dropped_and_counted()
    {
        var sink = new RecordingSink();
        sink.Hold();
        await using var h = TelemetryHarness.Create(inferKit: b => b.AddAuditSink(sink, o => o.BufferCapacity = 4));
        using var release = new GateOpener(sink.Release); // disposed before the harness, whose disposal flushes to the sink
        using var dropped = h.Collect<long>(InferKitTelemetry.Instruments.AuditDropped);
        await h.LoadAsync();

        (await h.Send(1)).Dispose();
        await sink.Entered.WaitAsync(TimeSpan.FromSeconds(30)); // the sink holds record 1 and takes nothing more

        // 20 more requests all complete while the sink stays blocked: 4 records wait in the buffer, 16 are dropped.
        for (int i = 2; i <= 21; i++)
        {
            using var r = await h.Send(i);
            Assert.True(r.IsSuccess, r.Message);
        }

        var drops = dropped.GetMeasurementSnapshot();
        Assert.Equal(16, drops.Sum(m => m.Value));
        Assert.All(drops, m => Assert.Equal("m", m.Tags[InferKitTelemetry.ModelTag]));
        Assert.Equal(["1"], Ids(sink));

        // Drops are logged in aggregate, one line per interval, not one per record.
        Assert.DoesNotContain(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 5001);
        h.Time.Advance(TimeSpan.FromSeconds(10));
        var line = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 5001);
        Assert.Contains("16 record(s) dropped", line.Message, StringComparison.Ordinal);

        // Released, the sink gets what waited in the buffer, in order (disposal flushes the buffer).
        sink.Release();
        await h.DisposeAsync();
        Assert.Equal(["1", "2", "3", "4", "5"], Ids(sink));
    }

    [Fact]
    public async Task Records_describe_inputs_outputs_latency_and_outcome_and_carry_copies_only_when_asked()
    {
        var summaries = new RecordingSink();
        await using (var h = TelemetryHarness.Create(o => o.Batching.MaxQueueLength = 1, computeTime: rows => TimeSpan.FromMilliseconds(25),
            inferKit: b => b.AddAuditSink(summaries)))
        {
            await h.LoadAsync();
            (await h.Send(1)).Dispose();
            var first = await h.OccupyAsync(2);
            var queued = h.Send(3).AsTask();
            (await h.Send(4)).Dispose(); // refused: queue full
            h.Backend.Release();
            (await first).Dispose();
            (await queued).Dispose();
        }

        var byId = summaries.Records.ToDictionary(r => r.RequestId!);
        Assert.Equal(4, byId.Count);
        var ok = byId["1"];
        Assert.Equal(("m", "1", InferenceOutcome.Success, RefusalReason.None, "m/1/0", 1), (ok.Model, ok.Version, ok.Outcome, ok.RefusalReason, ok.Instance, ok.BatchSize));
        Assert.Equal(TimeSpan.FromMilliseconds(25), ok.Latency);
        Assert.Null(ok.Message);
        var input = Assert.Single(ok.Inputs);
        Assert.Equal(("x", TensorElementType.Float32), (input.Name, input.ElementType));
        Assert.Equal([1L, 2L], input.Shape);
        Assert.Null(input.Data);
        var output = Assert.Single(ok.Outputs);
        Assert.Equal(("y", TensorElementType.Float32), (output.Name, output.ElementType));
        Assert.Equal([1L, 2L], output.Shape);
        Assert.Null(output.Data);

        // Request 3 waited for request 2 (25 ms) and ran for 25 ms.
        Assert.Equal(TimeSpan.FromMilliseconds(50), byId["3"].Latency);

        var refused = byId["4"];
        Assert.Equal((InferenceOutcome.Refused, RefusalReason.QueueFull, 0), (refused.Outcome, refused.RefusalReason, refused.Outputs.Count));
        Assert.Contains("queue is full", refused.Message, StringComparison.Ordinal);
        Assert.Single(refused.Inputs);
    }

    [Fact]
    public async Task With_CaptureTensorData_records_own_copies_that_outlive_the_response()
    {
        var sink = new RecordingSink();
        await using (var h = TelemetryHarness.Create(inferKit: b => b.AddAuditSink(sink, o => o.CaptureTensorData = true)))
        {
            await h.LoadAsync();
            var data = new float[] { 5, 0, 5, 1 };
            var request = new InferenceRequest(Tensor.Create("x", data, 2, 2)) { Id = "5" };
            using (var response = await h.Client.InferAsync("m", request))
            {
                Assert.True(response.IsSuccess);
            }

            // The caller reuses its buffer after the call, and the response's buffers went back to the pool:
            // the record keeps its own copies.
            data.AsSpan().Fill(-1);
        }

        var record = Assert.Single(sink.Records);
        Assert.Equal([5f, 0f, 5f, 1f], record.Inputs[0].Data!.Value.ToArray<float>());
        Assert.Equal([10f, 0f, 10f, 2f], record.Outputs[0].Data!.Value.ToArray<float>());
        Assert.Equal([2L, 2L], record.Outputs[0].Data!.Value.Shape.ToArray());
    }

    [Fact]
    public async Task Sampling_records_an_exact_share_and_failures_are_recorded_with_their_error()
    {
        var sink = new RecordingSink();
        await using (var h = TelemetryHarness.Create(o => o.Health.RetryOnAnotherInstance = false,
            inferKit: b => b.AddAuditSink(sink, o => o.SamplingRate = 0.25)))
        {
            await h.LoadAsync();
            for (int i = 1; i <= 7; i++)
            {
                (await h.Send(i)).Dispose();
            }

            h.Backend.Failure = () => new InvalidOperationException("boom");
            await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(8));
        }

        // Of 8 requests, every 4th is recorded: 4 and 8.
        Assert.Equal(["4", "8"], Ids(sink));
        var failed = sink.Records.Last();
        Assert.Equal(InferenceOutcome.Error, failed.Outcome);
        Assert.Contains("boom", failed.Message, StringComparison.Ordinal);
        Assert.Empty(failed.Outputs);
    }

    [Fact]
    public async Task A_failing_sink_is_logged_at_most_once_per_interval_and_keeps_receiving_records()
    {
        var sink = new RecordingSink { Failure = _ => new InvalidOperationException("disk full") };
        var h = TelemetryHarness.Create(inferKit: b => b.AddAuditSink(sink));
        await using (h)
        {
            await h.LoadAsync();
            for (int i = 1; i <= 3; i++)
            {
                (await h.Send(i)).Dispose();
            }
        }

        Assert.Equal(["1", "2", "3"], Ids(sink));
        var logged = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 5002);
        Assert.Equal("disk full", logged.Exception?.Message);
    }

    [Fact]
    public async Task Sinks_registered_by_type_are_resolved_from_the_container()
    {
        await using var h = TelemetryHarness.Create(inferKit: b => b.AddAuditSink<CountingSink>());
        await h.LoadAsync();
        var metrics = (InferKitMetrics)h.Services.GetService(typeof(InferKitMetrics))!;
        Assert.True(metrics.AuditEnabled);
        Assert.IsType<CountingSink>(h.Services.GetService(typeof(IInferenceAuditSink)));
    }

    private sealed class CountingSink : IInferenceAuditSink
    {
        public int Count;

        public ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Count);
            return ValueTask.CompletedTask;
        }
    }
}
