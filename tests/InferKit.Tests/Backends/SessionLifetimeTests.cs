using InferKit.Backends.Onnx;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferKit.Tests.Backends;

/// <summary>
/// Tests that read <see cref="OnnxModelBackend.LiveSessions"/>, a process-wide counter: they run alone, after every
/// parallel collection, so that no other test opens or closes sessions meanwhile.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class OnnxSessionCounterGroup
{
    public const string Name = "ONNX session counter";
}

[Collection(OnnxSessionCounterGroup.Name)]
public sealed class SessionLifetimeTests
{
    private static readonly byte[] Mlp = new MlpModel(16, 32, 3, seed: 5).ToOnnx();
    private static readonly byte[] Multi = new MultiIoModel().ToOnnx();

    private static InferenceRequest MlpRequest() => new(Tensor.Create(MlpModel.InputName, new float[16], 1, 16));

    [Fact]
    public async Task Disposing_the_service_provider_closes_every_session()
    {
        int before = OnnxModelBackend.LiveSessions;
        var services = OnnxTestServices.Build(b => b
            .AddOnnxModel("mlp", ModelSource.FromBytes(Mlp), o => o.Instances = 2)
            .AddOnnxModel("multi", ModelSource.FromBytes(Multi)));
        await services.Registry().LoadAllAsync();
        Assert.Equal(before + 3, OnnxModelBackend.LiveSessions);
        using (var response = await services.Client().InferAsync("mlp", MlpRequest()))
        {
            Assert.True(response.IsSuccess, response.Message);
        }

        await services.DisposeAsync();

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task Synchronous_dispose_also_closes_every_session()
    {
        int before = OnnxModelBackend.LiveSessions;
        var services = OnnxTestServices.Build(b => b.AddOnnxModel("mlp", ModelSource.FromBytes(Mlp), o => o.Instances = 2));
        await services.Registry().LoadAllAsync();
        Assert.Equal(before + 2, OnnxModelBackend.LiveSessions);

        services.Dispose();

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task Without_a_host_a_model_loads_on_first_use_and_closes_on_dispose()
    {
        int before = OnnxModelBackend.LiveSessions;
        await using (var services = OnnxTestServices.Build(b => b.AddOnnxModel("mlp", ModelSource.FromBytes(Mlp))))
        {
            Assert.Equal(before, OnnxModelBackend.LiveSessions);
            Assert.Equal(ModelState.NotLoaded, services.Registry().GetModel("mlp").State);

            using var response = await services.Client().InferAsync("mlp", MlpRequest());

            Assert.True(response.IsSuccess, response.Message);
            Assert.Equal(ModelState.Ready, services.Registry().GetModel("mlp").State);
            Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);
        }

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task Stopping_and_disposing_the_host_closes_every_session()
    {
        int before = OnnxModelBackend.LiveSessions;
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Logging.AddFakeLogging();
        builder.Services.AddInferKit().AddOnnxModel("mlp", ModelSource.FromBytes(Mlp), o => o.Instances = 2);
        using (var host = builder.Build())
        {
            await host.StartAsync();
            await host.Services.GetRequiredService<IModelRegistry>().LoadAllAsync();
            Assert.Equal(before + 2, OnnxModelBackend.LiveSessions);
            using (var response = await host.Services.GetRequiredService<IInferenceClient>().InferAsync("mlp", MlpRequest()))
            {
                Assert.True(response.IsSuccess, response.Message);
            }

            await host.StopAsync();
        }

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task A_model_that_fails_to_load_leaves_no_session_behind()
    {
        int before = OnnxModelBackend.LiveSessions;
        await using (var services = OnnxTestServices.Build(b => b
            .AddOnnxModel("good", ModelSource.FromBytes(Mlp))
            .AddOnnxModel("broken", ModelSource.FromBytes([1, 2, 3, 4, 5]), o => o.Instances = 2)))
        {
            var ex = await Assert.ThrowsAsync<ModelLoadException>(() => services.Registry().LoadAsync("broken"));
            Assert.Equal("broken", ex.Model);
            Assert.Contains("'broken'", ex.Message, StringComparison.Ordinal);
            Assert.Equal(ModelState.Failed, services.Registry().GetModel("broken").State);
            Assert.False(string.IsNullOrEmpty(services.Registry().GetModel("broken").Error));

            // The other model is unaffected.
            using var response = await services.Client().InferAsync("good", MlpRequest());
            Assert.True(response.IsSuccess, response.Message);
            Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);
        }

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task CUDA_fallback_and_refused_fallback_leave_no_session_behind()
    {
        int before = OnnxModelBackend.LiveSessions;
        await using (var services = OnnxTestServices.Build(b => b
            .AddOnnxModel("fallback", ModelSource.FromBytes(Mlp), o => o.Onnx.Provider = ExecutionProvider.Cuda)
            .AddOnnxModel("strict", ModelSource.FromBytes(Mlp), o =>
            {
                o.Onnx.Provider = ExecutionProvider.Cuda;
                o.Onnx.AllowCpuFallback = false;
            })))
        {
            await services.Registry().LoadAsync("fallback");
            await Assert.ThrowsAsync<ModelLoadException>(() => services.Registry().LoadAsync("strict"));
            Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);
        }

        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }
}
