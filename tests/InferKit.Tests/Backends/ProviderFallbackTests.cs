using InferKit.Backends.Onnx;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace InferKit.Tests.Backends;

/// <summary>The tests reference the CPU-only ONNX Runtime package, so CUDA and TensorRT are never available here.</summary>
public sealed class ProviderFallbackTests
{
    private static readonly MlpModel Mlp = new(16, 32, 3, seed: 11);
    private static readonly byte[] MlpBytes = Mlp.ToOnnx();

    [Theory]
    [InlineData(ExecutionProvider.Cuda, "CUDA")]
    [InlineData(ExecutionProvider.TensorRT, "TensorRT")]
    public async Task A_GPU_provider_falls_back_to_CPU_with_a_warning(ExecutionProvider provider, string requested)
    {
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel("gpu", ModelSource.FromBytes(MlpBytes), o =>
        {
            o.Onnx.Provider = provider;
            o.Onnx.DeviceId = 0;
        }));
        var logs = services.GetFakeLogCollector();

        await services.Registry().LoadAllAsync();

        var info = services.Registry().GetModel("gpu");
        Assert.Equal(ModelState.Ready, info.State);
        var instance = Assert.Single(info.Instances);
        Assert.Equal("CPU", instance.Provider.Name);
        Assert.Equal(requested, instance.Provider.Requested);
        Assert.True(instance.Provider.IsFallback);
        Assert.False(string.IsNullOrEmpty(instance.Provider.FallbackReason));

        var warning = Assert.Single(logs.GetSnapshot(), r => r.Level == LogLevel.Warning && r.Message.Contains(requested, StringComparison.Ordinal));
        Assert.Contains("'gpu'", warning.Message, StringComparison.Ordinal);
        Assert.Contains("CPU", warning.Message, StringComparison.Ordinal);

        // It serves on CPU, with the same results.
        var input = Mlp.CreateInputs(2, seed: 3);
        using var response = await services.Client().InferAsync("gpu", new InferenceRequest(Tensor.Create(MlpModel.InputName, input, 2, 16)));
        Assert.True(response.IsSuccess, response.Message);
        OnnxTestServices.AssertClose(Mlp.Forward(input, 2), response[MlpModel.ProbabilitiesName].GetSpan<float>(), 1e-4, "probabilities");
    }

    [Fact]
    public async Task Without_CPU_fallback_the_load_fails_naming_the_model_and_the_provider()
    {
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel("strict", ModelSource.FromBytes(MlpBytes), o =>
        {
            o.Onnx.Provider = ExecutionProvider.Cuda;
            o.Onnx.AllowCpuFallback = false;
        }));

        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => services.Registry().LoadAsync("strict"));

        Assert.Equal("strict", ex.Model);
        Assert.Contains("'strict'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("CUDA", ex.Message, StringComparison.Ordinal);
        Assert.Contains("AllowCpuFallback", ex.Message, StringComparison.Ordinal);
        var info = services.Registry().GetModel("strict");
        Assert.Equal(ModelState.Failed, info.State);
        Assert.False(info.IsReady);
        Assert.False(services.Registry().AllRequiredModelsReady);
    }

    [Fact]
    public async Task A_required_model_that_cannot_load_makes_LoadAll_throw()
    {
        await using var services = OnnxTestServices.Build(b => b
            .AddOnnxModel("cpu", ModelSource.FromBytes(MlpBytes))
            .AddOnnxModel("strict", ModelSource.FromBytes(MlpBytes), o =>
            {
                o.Onnx.Provider = ExecutionProvider.Cuda;
                o.Onnx.AllowCpuFallback = false;
            }));

        await Assert.ThrowsAnyAsync<Exception>(() => services.Registry().LoadAllAsync());

        Assert.Equal(ModelState.Ready, services.Registry().GetModel("cpu").State);
        Assert.Equal(ModelState.Failed, services.Registry().GetModel("strict").State);
    }

    [Fact]
    public async Task The_fallback_warning_is_logged_when_logging_is_added_after_InferKit()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddOnnxModel("gpu", ModelSource.FromBytes(MlpBytes), o => o.Onnx.Provider = ExecutionProvider.Cuda);
        services.AddLogging(b => b.AddFakeLogging());
        await using var provider = services.BuildServiceProvider();

        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();

        Assert.Contains(provider.GetFakeLogCollector().GetSnapshot(), r => r.Level == LogLevel.Warning && r.Message.Contains("CUDA", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_GPU_provider_falls_back_to_CPU_and_serves_when_logging_the_warning_throws()
    {
        var throwing = new InferKit.Tests.Fakes.ThrowingLoggerProvider();
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddFakeLogging().AddProvider(throwing));
        services.AddInferKit().AddOnnxModel("gpu", ModelSource.FromBytes(MlpBytes), o => o.Onnx.Provider = ExecutionProvider.Cuda);
        await using var provider = services.BuildServiceProvider();
        using var quiet = throwing.QuietAtEnd();

        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();

        Assert.Equal(ModelState.Ready, provider.GetRequiredService<IModelRegistry>().GetModel("gpu").State);
        Assert.Contains(provider.GetFakeLogCollector().GetSnapshot(), r => r.Level == LogLevel.Warning && r.Message.Contains("CUDA", StringComparison.Ordinal));
        var input = Mlp.CreateInputs(1, seed: 5);
        using var response = await provider.GetRequiredService<IInferenceClient>().InferAsync("gpu", new InferenceRequest(Tensor.Create(MlpModel.InputName, input, 1, 16)));
        Assert.True(response.IsSuccess, response.Message);
    }
}
