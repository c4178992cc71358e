using InferKit.Backends;
using InferKit.Telemetry;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using InferKit.Tests.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// A joined batch whose outputs cannot be cut back into its requests (the model's axis 0 does not follow the batch):
/// each request runs again alone, and each caller gets the answer, or the error, of its own run.
/// </summary>
public sealed class UnsplittableBatchTests
{
    private static ValueTask<InferenceResponse> Send(Harness h, int id, TimeSpan? timeout = null)
        => h.Client.InferAsync("m", FakeBackend.Request(id, timeout: timeout));

    private static void AssertAnswer(InferenceResponse response, int id)
    {
        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(new[] { 2f * id, 0f }, response["y"].ToArray<float>());
        Assert.Equal(1, response.BatchSize);
    }

    [Fact]
    public async Task Each_request_of_a_batch_whose_outputs_cannot_be_split_runs_again_alone_and_gets_its_own_answer()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        h.Backend.FirstRowOnlyWhenJoined = true;
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 3).Select(i => Send(h, i).AsTask()).ToArray();

        h.Backend.Release();
        using (var r = await first)
        {
            AssertAnswer(r, 100);
        }

        for (int i = 0; i < queued.Length; i++)
        {
            using var r = await queued[i];
            AssertAnswer(r, i + 1);
        }

        // One joined run that could not be split, then one run per request: bounded, nothing retried.
        Assert.Equal([[100f], [1f, 2f, 3f], [1f], [2f], [3f]], h.BatchIds());

        // The instance did nothing wrong: no failure counted, it stays in rotation, no reservation left behind.
        var instance = Assert.Single(h.Registry.GetModel("m").Instances);
        Assert.Equal(0, instance.TotalFailures);
        Assert.Null(instance.OutUntil);
        Assert.Equal(0, instance.Outstanding);
        Assert.Equal(0, instance.OutstandingRows);
    }

    [Fact]
    public async Task A_request_that_still_fails_alone_gets_its_own_error_and_the_others_their_answers()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        h.Backend.FirstRowOnlyWhenJoined = true;
        h.Backend.Failure = () => h.Backend.Batches.Last() is [2f] ? new InvalidOperationException("request 2 fails on its own") : null;
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 3).Select(i => Send(h, i).AsTask()).ToArray();

        h.Backend.Release();
        (await first).Dispose();
        using (var r = await queued[0])
        {
            AssertAnswer(r, 1);
        }

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => queued[1]);
        Assert.Contains("request 2 fails on its own", ex.Message, StringComparison.Ordinal);
        using (var r = await queued[2])
        {
            AssertAnswer(r, 3);
        }

        Assert.Equal([[100f], [1f, 2f, 3f], [1f], [2f], [3f]], h.BatchIds());
        Assert.Equal(1, Assert.Single(h.Registry.GetModel("m").Instances).TotalFailures); // the run that failed alone
    }

    [Fact]
    public async Task A_request_whose_deadline_passed_before_it_could_run_alone_is_answered_deadline_exceeded_without_running()
    {
        // The joined run takes 100 ms on the fake clock (a run of one row, none): request 2's 50 ms pass during it.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Batching.RefuseInfeasibleDeadlines = false;
        }, computeTime: rows => rows > 1 ? TimeSpan.FromMilliseconds(100) : TimeSpan.Zero);
        h.Backend.FirstRowOnlyWhenJoined = true;
        var first = await h.OccupyAsync(100);
        var one = Send(h, 1).AsTask();
        var two = Send(h, 2, timeout: TimeSpan.FromMilliseconds(50)).AsTask();

        h.Backend.Release();
        (await first).Dispose();
        using (var r = await two)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.True(r.Message!.Contains("before the request could run again alone", StringComparison.Ordinal), r.Message);
        }

        using (var r = await one)
        {
            AssertAnswer(r, 1);
        }

        var batches = h.BatchIds();
        Assert.Equal(3, batches.Count); // the occupying request, the joined run, request 1 alone
        Assert.Equal([1f, 2f], batches[1].Order());
        Assert.Equal([1f], batches[2]);
    }

    [Fact]
    public async Task Each_request_is_measured_once_and_each_run_alone_as_a_batch_of_its_own_rows()
    {
        await using var h = TelemetryHarness.Create(o => o.Batching.MaxBatchSize = 8);
        using var requestDuration = h.Collect<double>(InferKitTelemetry.Instruments.RequestDuration);
        using var queueDuration = h.Collect<double>(InferKitTelemetry.Instruments.QueueDuration);
        using var computeDuration = h.Collect<double>(InferKitTelemetry.Instruments.ComputeDuration);
        using var batchSize = h.Collect<int>(InferKitTelemetry.Instruments.BatchSize);
        await h.LoadAsync();
        requestDuration.Clear();
        queueDuration.Clear();
        computeDuration.Clear();
        batchSize.Clear();

        h.Backend.FirstRowOnlyWhenJoined = true;
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 3).Select(i => h.Send(i).AsTask()).ToArray();
        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
        }

        // Four requests, each counted once, as a success; the joined run that could not be split is not a measured batch.
        var outcomes = requestDuration.GetMeasurementSnapshot().Select(m => (string)m.Tags[InferKitTelemetry.OutcomeTag]!).ToArray();
        Assert.Equal(["success", "success", "success", "success"], outcomes);
        Assert.Equal(4, queueDuration.GetMeasurementSnapshot().Count);
        Assert.Equal([1, 1, 1, 1], batchSize.GetMeasurementSnapshot().Select(m => m.Value).ToArray());
        Assert.Equal(4, computeDuration.GetMeasurementSnapshot().Count);
    }

    [Fact]
    public async Task Once_a_joined_batch_shows_axis_0_is_not_a_batch_axis_the_model_version_stops_joining_and_warns_once()
    {
        var logs = new FakeLoggerProvider();
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8, services: s => s.AddLogging(b => b.AddProvider(logs)));
        h.Backend.FirstRowOnlyWhenJoined = true;

        // Requests from..from+2 queued behind a held request, then released; each must get its own answer.
        async Task WaveAsync(int held, int from)
        {
            var occupied = await h.OccupyAsync(held);
            var wave = Enumerable.Range(from, 3).Select(i => Send(h, i).AsTask()).ToArray();
            h.Backend.Release();
            (await occupied).Dispose();
            for (int i = 0; i < wave.Length; i++)
            {
                using var r = await wave[i];
                AssertAnswer(r, from + i);
            }
        }

        // First wave: the joined run shows the output does not follow the batch; each request runs again alone.
        await WaveAsync(100, 1);

        // Second wave, queued the same way: no joined run is wasted any more, each request runs once, alone.
        await WaveAsync(200, 4);

        var batches = h.BatchIds();
        Assert.Equal([[100f], [1f, 2f, 3f], [1f], [2f], [3f], [200f]], batches.Take(6));
        Assert.Equal([[4f], [5f], [6f]], batches.Skip(6).OrderBy(static b => b[0]));

        // One warning naming the setting, and no error per batch: nobody failed, the instance did nothing wrong.
        var records = logs.Collector.GetSnapshot();
        var warning = Assert.Single(records, static r => r.Id.Id == 2005);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("ModelOptions.AxisZeroIsBatch = false", warning.Message, StringComparison.Ordinal);
        Assert.Contains("output 'y' has shape [1,2] for a batch of 3 rows", warning.Exception!.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(records, static r => r.Level >= LogLevel.Error);
        Assert.Equal(0, Assert.Single(h.Registry.GetModel("m").Instances).TotalFailures);
    }

    [Fact]
    public async Task A_padded_output_missing_its_padded_axis_reruns_that_batch_alone_but_the_model_keeps_joining()
    {
        // Whether an output has the axis padding cuts back can depend on the requests (an output whose rank follows its
        // data), so it says nothing for good about the model: later requests are still joined.
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("ids", TensorElementType.Int64, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("y", TensorElementType.Int64, [-1, -1], ["batch", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, TensorElementType.Int64, inputs[0].Shape[..1], new byte[inputs[0].Shape[0] * sizeof(long)]));
        var joinDelay = TimeSpan.FromMilliseconds(10);
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.Batching.Padding.Enabled = true, joinDelay);
        for (int wave = 0; wave < 2; wave++)
        {
            var a = host.Send(new InferenceRequest(Tensor.Create("ids", new long[2], 1, 2)));
            var b = host.Send(new InferenceRequest(Tensor.Create("ids", new long[3], 1, 3)));
            host.Time.Advance(joinDelay);
            foreach (var t in new[] { a, b })
            {
                using var r = await t;
                Assert.True(r.IsSuccess, r.Message);
            }
        }

        Assert.Equal(["ids: Int64[2,3]", "ids: Int64[1,2]", "ids: Int64[1,3]", "ids: Int64[2,3]", "ids: Int64[1,2]", "ids: Int64[1,3]"], backend.Runs);
    }
}
