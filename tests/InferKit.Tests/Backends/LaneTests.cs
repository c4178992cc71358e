using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Tests.Backends;

/// <summary>Single-threaded lanes (<see cref="OnnxSessionSettings.Lanes"/>): when they apply and which session a run takes.</summary>
public sealed class LaneTests
{
    private const double Tolerance = 1e-4;

    [Theory]
    [InlineData(null, null, "CPU", false, 2, 1, 2)] // the default on 2 cores, one instance in the host: a lane per core
    [InlineData(null, null, "CPU", false, 16, 1, OnnxModelBackend.DefaultMaxLanes)] // capped
    [InlineData(null, null, "CPU", false, 1, 1, 1)] // one core: nothing to gain
    [InlineData(null, null, "CPU", false, 2, 2, 1)] // two instances (models) share 2 cores: no lanes
    [InlineData(null, null, "CPU", false, 8, 3, 2)] // 8 cores among 3 instances
    [InlineData(null, 2, "CPU", false, 8, 1, 1)] // threads set by the user: their choice stands
    [InlineData(3, 2, "CPU", false, 8, 2, 3)] // lanes set by the user
    [InlineData(null, null, "CUDA", false, 8, 1, 1)] // GPU providers run one stream
    [InlineData(3, null, "CUDA", false, 8, 1, 1)]
    [InlineData(null, null, "CPU", true, 8, 1, 1)] // a process-wide thread pool is shared by design
    public void Lanes_share_the_cores_among_the_hosts_instances_unless_set(int? lanes, int? intraOp, string serving, bool globalPool, int processors, int hostInstances, int expected)
    {
        var settings = new OnnxSessionSettings { Lanes = lanes, IntraOpThreads = intraOp };
        Assert.Equal(expected, OnnxModelBackend.ResolveLanes(settings, serving, globalPool, processors, hostInstances));
    }

    [Theory]
    [InlineData(null, false, 2, 1, null)] // one instance in the host: ONNX Runtime's own default
    [InlineData(null, false, 2, 2, 1)] // two share 2 cores: one thread each
    [InlineData(null, false, 8, 3, 2)]
    [InlineData(null, false, 2, 5, 1)] // never below 1
    [InlineData(4, false, 2, 5, 4)] // set by the user: it stands
    [InlineData(null, true, 8, 3, null)] // the process-wide pool decides
    public void Intra_op_threads_default_to_a_share_of_the_cores_when_several_instances_share_the_host(int? set, bool globalPool, int processors, int hostInstances, int? expected)
        => Assert.Equal(expected, OnnxModelBackend.IntraOpThreadsFor(new OnnxSessionSettings { IntraOpThreads = set }, globalPool, processors, hostInstances));

    [Theory]
    [InlineData(1, 1, true)] // a lone caller keeps every intra-op thread
    [InlineData(OnnxModelBackend.LoneRunMaxRows, 1, true)]
    [InlineData(OnnxModelBackend.LoneRunMaxRows + 1, 1, false)] // a large batch means load: a lane
    [InlineData(1, 2, false)] // another run in flight: a lane
    public void A_small_batch_alone_takes_the_main_session_and_anything_else_a_lane(int rows, int inFlight, bool main)
        => Assert.Equal(main, OnnxModelBackend.UsesMainSession(rows, inFlight));

    [Fact]
    public void A_lone_small_batch_runs_on_the_main_session_a_large_one_or_one_soon_after_load_on_a_lane_and_all_match_the_reference()
    {
        var mlp = new MlpModel(inputSize: 16, hiddenSize: 32, classes: 4, seed: 7);
        var settings = new OnnxSessionSettings { Lanes = 2 };
        using var weights = new Microsoft.ML.OnnxRuntime.PrePackedWeightsContainer();
        using var backend = OnnxModelBackend.Create("lanes", new OnnxModelData(mlp.ToOnnx(), null), settings, weights, null, hostInstances: 1, NullLogger.Instance);
        Assert.Equal(2, backend.Lanes);

        Check(1);
        Assert.Equal((1, 0), (backend.MainRuns, backend.LaneRuns));
        Check(OnnxModelBackend.LoneRunMaxRows + 8);
        Assert.Equal((1, 1), (backend.MainRuns, backend.LaneRuns));

        // Right after a run that showed load, a small batch alone still takes a lane (the instance is only momentarily idle).
        backend.LoadMemory = TimeSpan.FromHours(1);
        Check(1);
        Assert.Equal((1, 2), (backend.MainRuns, backend.LaneRuns));

        // Once that is long enough ago, it takes the main session again.
        backend.LoadMemory = TimeSpan.Zero;
        Check(1);
        Assert.Equal((2, 2), (backend.MainRuns, backend.LaneRuns));

        void Check(int rows)
        {
            var input = mlp.CreateInputs(rows, seed: rows);
            var expected = mlp.Forward(input, rows, out var expectedLogits);
            var sink = new CopySink();
            backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, CancellationToken.None);
            OnnxTestServices.AssertClose(expectedLogits, sink.Outputs[0], Tolerance, $"logits of {rows} rows");
            OnnxTestServices.AssertClose(expected, sink.Outputs[1], Tolerance, $"probabilities of {rows} rows");
        }
    }

    [Fact]
    public async Task An_instance_with_lanes_runs_that_many_batches_at_once_and_concurrent_callers_get_their_own_rows()
    {
        var mlp = new MlpModel(inputSize: 16, hiddenSize: 32, classes: 4, seed: 11);
        await using var services = OnnxTestServices.Build(b => b
            .AddOnnxModel("laned", ModelSource.FromBytes(mlp.ToOnnx()), o => o.Onnx.Lanes = 3)
            .AddOnnxModel("single", ModelSource.FromBytes(mlp.ToOnnx()), o => o.Onnx.IntraOpThreads = 1));
        await services.Registry().LoadAllAsync();
        Assert.Equal(3, services.Registry().GetModel("laned").Instances[0].MaxConcurrency);
        Assert.Equal(1, services.Registry().GetModel("single").Instances[0].MaxConcurrency);

        var rows = Enumerable.Range(0, 48).Select(i => 1 + (i % 5)).ToArray();
        var inputs = rows.Select((r, i) => mlp.CreateInputs(r, seed: 500 + i)).ToArray();
        var responses = await Task.WhenAll(rows.Select((r, i) => Task.Run(async () =>
            await services.Client().InferAsync("laned", new InferenceRequest(Tensor.Create(MlpModel.InputName, inputs[i], r, mlp.InputSize))))));
        for (int i = 0; i < rows.Length; i++)
        {
            using var response = responses[i];
            Assert.True(response.IsSuccess, response.Message);
            var expected = mlp.Forward(inputs[i], rows[i], out _);
            OnnxTestServices.AssertClose(expected, response[MlpModel.ProbabilitiesName].GetSpan<float>(), Tolerance, $"request {i}");
        }
    }
}
