using InferKit.Models;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Backends;

/// <summary>One provider serving the small in-memory models: multi input/output, int64 input, fixed batch.</summary>
public sealed class SmallModelsFixture : IAsyncLifetime
{
    public const string Multi = "multi";
    public const string SumIds = "sum-ids";
    public const string Fixed = "fixed";

    public ServiceProvider Services { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Services = OnnxTestServices.Build(b => b
            .AddOnnxModel(Multi, ModelSource.FromBytes(new MultiIoModel(4).ToOnnx()), o => o.Onnx.IntraOpThreads = 1)
            .AddOnnxModel(SumIds, ModelSource.FromBytes(new SumIdsModel().ToOnnx()), o => o.Onnx.IntraOpThreads = 1)
            .AddOnnxModel(Fixed, ModelSource.FromBytes(new FixedBatchModel(4).ToOnnx()), o => o.Onnx.IntraOpThreads = 1));
        await Services.Registry().LoadAllAsync();
    }

    public async Task DisposeAsync() => await Services.DisposeAsync();
}
