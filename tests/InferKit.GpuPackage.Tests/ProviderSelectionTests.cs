using Google.Protobuf;
using InferKit.Backends.Onnx;
using InferKit.Models;
using InferKit.Tensors;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Onnx;

namespace InferKit.GpuPackage.Tests;

public sealed class ProviderSelectionTests
{
    /// <summary>y = x · W with W = [[1, 2], [3, 4]]: input "x" float [batch, 2].</summary>
    private static byte[] MatMulModel()
    {
        static ValueInfoProto Value(string name)
        {
            var shape = new TensorShapeProto();
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 2 });
            return new ValueInfoProto
            {
                Name = name,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
            };
        }

        var weights = new TensorProto { Name = "W", DataType = (int)TensorProto.Types.DataType.Float };
        weights.Dims.Add([2, 2]);
        weights.FloatData.Add([1f, 2f, 3f, 4f]);
        var graph = new GraphProto { Name = "matmul" };
        graph.Input.Add(Value("x"));
        graph.Output.Add(Value("y"));
        graph.Initializer.Add(weights);
        graph.Node.Add(new NodeProto { OpType = "MatMul", Input = { "x", "W" }, Output = { "y" } });
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "InferKit.GpuPackage.Tests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = 17 });
        return model.ToByteArray();
    }

    private static ServiceProvider Build(FakeLogCollector logs, Action<ModelOptions> configure)
    {
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(new FakeLoggerProvider(logs)).SetMinimumLevel(LogLevel.Debug));
        services.AddInferKit().AddOnnxModel("mm", ModelSource.FromBytes(MatMulModel()), configure);
        return services.BuildServiceProvider();
    }

    private static async Task<float[]> RunAsync(IInferenceClient client)
    {
        using var r = await client.InferAsync("mm", new InferenceRequest(Tensor.Create("x", new float[] { 1, 1, 2, 0 }, 2, 2)));
        Assert.True(r.IsSuccess, r.Message);
        return r["y"].ToArray<float>();
    }

    [Theory]
    [InlineData(ExecutionProvider.Cuda, "CUDA")]
    [InlineData(ExecutionProvider.TensorRT, "TensorRT")]
    public async Task Without_CUDA_libraries_the_GPU_package_falls_back_to_CPU_with_a_warning(ExecutionProvider provider, string name)
    {
        var logs = new FakeLogCollector();
        await using var sp = Build(logs, o => o.Onnx.Provider = provider);
        var registry = sp.GetRequiredService<IModelRegistry>();
        await registry.LoadAllAsync();

        var instance = Assert.Single(registry.GetModel("mm").Instances);
        Assert.Equal("CPU", instance.Provider.Name);
        Assert.Equal(name, instance.Provider.Requested);
        Assert.True(instance.Provider.IsFallback);
        Assert.Contains("Failed to load shared library", instance.Provider.FallbackReason, StringComparison.Ordinal);
        var warning = Assert.Single(logs.GetSnapshot(), l => l.Level == LogLevel.Warning && l.Id.Id == 1004);
        Assert.Contains($"execution provider {name}", warning.Message, StringComparison.Ordinal);
        Assert.Equal(new float[] { 4f, 6f, 2f, 4f }, await RunAsync(sp.GetRequiredService<IInferenceClient>()));
    }

    [Fact]
    public async Task With_fallback_switched_off_the_load_fails_naming_the_provider()
    {
        var logs = new FakeLogCollector();
        await using var sp = Build(logs, o =>
        {
            o.Onnx.Provider = ExecutionProvider.Cuda;
            o.Onnx.AllowCpuFallback = false;
        });
        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => sp.GetRequiredService<IModelRegistry>().LoadAllAsync());
        Assert.Contains("CUDA (device 0) could not load", ex.Message, StringComparison.Ordinal);
        Assert.Contains("AllowCpuFallback = false", ex.Message, StringComparison.Ordinal);
        Assert.Equal(ModelState.Failed, sp.GetRequiredService<IModelRegistry>().GetModel("mm").State);
    }

    [Fact]
    public async Task A_model_with_a_CUDA_group_and_a_CPU_group_serves_from_both_with_equal_outputs()
    {
        var logs = new FakeLogCollector();
        await using var sp = Build(logs, o =>
        {
            o.InstanceGroups.Add(new InstanceGroupOptions { Count = 1, Name = "gpu0", Weight = 4 });
            o.InstanceGroups[0].Onnx.Provider = ExecutionProvider.Cuda;
            o.InstanceGroups.Add(new InstanceGroupOptions { Count = 2, Name = "cpu", Weight = 1 });
            o.InstanceGroups[1].Onnx.IntraOpThreads = 1;
            o.LoadBalancing = "RoundRobin";
            o.Batching.AllowInlineExecution = true;
        });
        var registry = sp.GetRequiredService<IModelRegistry>();
        await registry.LoadAllAsync();
        var instances = registry.GetModel("mm").Instances;
        Assert.Equal(3, instances.Count);
        Assert.Equal(["CUDA", "CPU", "CPU"], instances.Select(i => i.Provider.Requested));
        Assert.All(instances, i => Assert.Equal("CPU", i.Provider.Name));
        Assert.Equal([4.0, 1.0, 1.0], instances.Select(i => i.Weight));

        var client = sp.GetRequiredService<IInferenceClient>();
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(new float[] { 4f, 6f, 2f, 4f }, await RunAsync(client));
        }

        Assert.All(registry.GetModel("mm").Instances, i => Assert.True(i.Completed >= 1, $"{i.Id} served nothing"));
    }
}
