using InferKit.Models;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace InferKit.Tests.Models;

public sealed class RegistryTests
{
    [Fact]
    public void Invalid_options_of_every_model_are_reported_together_at_start()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("a", _ => new FakeBackend(), o =>
            {
                o.Batching.MaxBatchSize = 0;
                o.LoadBalancing = "Fastest";
            })
            .AddModel("b", _ => new FakeBackend(), o =>
            {
                o.Instances = 0;
                o.Batching.PreferredBatchSizes.Add(64);
                o.Onnx.SpinDuration = TimeSpan.Zero;
            });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var message = string.Join("\n", ex.Failures);
        Assert.Contains("Model 'a': Batching.MaxBatchSize", message, StringComparison.Ordinal);
        Assert.Contains("unknown load-balancing strategy 'Fastest'. Known strategies: RoundRobin, LeastConnections, WeightedLeastConnections, PowerOfTwoChoices, PeakEwma", message, StringComparison.Ordinal);
        Assert.Contains("Model 'b': Instances", message, StringComparison.Ordinal);
        Assert.Contains("Model 'b': Batching.PreferredBatchSizes contains 64", message, StringComparison.Ordinal);
        Assert.Contains("Model 'b': Onnx.SpinDuration must be positive when set (was 00:00:00); set Onnx.AllowSpinning = false to stop spinning.", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_generic_host_validates_at_start_and_lists_every_error()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddInferKit().AddModel("a", _ => new FakeBackend(), o => o.LoadBalancing = "nope");
        using var host = builder.Build();
        var ex = await Assert.ThrowsAnyAsync<Exception>(() => host.StartAsync());
        Assert.Contains("unknown load-balancing strategy 'nope'", ex.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Under_the_generic_host_models_load_at_start_become_ready_and_drain_and_dispose_at_stop()
    {
        var backend = new FakeBackend();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddInferKit(o => o.DrainTimeout = TimeSpan.FromSeconds(30)).AddModel("m", _ => backend);
        using var host = builder.Build();
        using var release = new GateOpener(backend.Release); // disposed before the host, whose disposal waits for a held run
        var registry = host.Services.GetRequiredService<IModelRegistry>();
        Assert.Equal(ModelState.NotLoaded, registry.GetModel("m").State);
        await host.StartAsync();
        await registry.LoadAllAsync();
        Assert.True(registry.AllRequiredModelsReady);
        var info = registry.GetModel("m");
        Assert.Equal(ModelState.Ready, info.State);
        Assert.Equal("custom", info.Platform);
        Assert.Equal("x", Assert.Single(info.Signature!.Inputs).Name);

        // A request accepted before stop is answered; requests after the drain began are refused.
        backend.Hold();
        var client = host.Services.GetRequiredService<IInferenceClient>();
        var accepted = Task.Run(async () => await client.InferAsync("m", FakeBackend.Request(1)));
        await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        var queued = client.InferAsync("m", FakeBackend.Request(2)).AsTask();
        var stopping = host.StopAsync();
        while (registry.GetModel("m").State != ModelState.Draining)
        {
            await Task.Yield();
        }

        using (var refused = await client.InferAsync("m", FakeBackend.Request(3)))
        {
            Assert.Equal(RefusalReason.ShuttingDown, refused.RefusalReason);
        }

        Assert.False(stopping.IsCompleted);
        backend.Release();
        await stopping;
        using (var r = await accepted)
        {
            Assert.True(r.IsSuccess);
        }

        using (var r = await queued)
        {
            Assert.True(r.IsSuccess);
        }

        host.Dispose();
        Assert.True(backend.Disposed);
    }

    [Fact]
    public async Task Without_a_host_a_model_loads_on_first_use()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend());
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        Assert.Equal(ModelState.NotLoaded, registry.GetModel("m").State);
        using var r = await provider.GetRequiredService<IInferenceClient>().InferAsync("m", FakeBackend.Request(4));
        Assert.True(r.IsSuccess);
        Assert.Equal(ModelState.Ready, registry.GetModel("m").State);
    }

    [Fact]
    public async Task A_model_that_fails_to_load_reports_why_and_requests_to_it_are_refused_while_others_serve()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("broken", _ => throw new InvalidOperationException("weights missing"))
            .AddModel("ok", _ => new FakeBackend(), o => o.Required = false);
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => registry.LoadAllAsync());
        Assert.Contains("weights missing", ex.Message, StringComparison.Ordinal);
        Assert.Equal(ModelState.Failed, registry.GetModel("broken").State);
        Assert.Contains("weights missing", registry.GetModel("broken").Error, StringComparison.Ordinal);
        Assert.False(registry.AllRequiredModelsReady);

        var client = provider.GetRequiredService<IInferenceClient>();
        using (var r = await client.InferAsync("broken", FakeBackend.Request(1)))
        {
            Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
        }

        using (var r = await client.InferAsync("ok", FakeBackend.Request(1)))
        {
            Assert.True(r.IsSuccess);
        }
    }

    [Fact]
    public async Task Unknown_model_and_version_name_what_is_known()
    {
        await using var h = await Harness.CreateAsync();
        var ex = await Assert.ThrowsAsync<ModelNotFoundException>(async () => await h.Client.InferAsync("nope", FakeBackend.Request(1)));
        Assert.Contains("Known models: m", ex.Message, StringComparison.Ordinal);
        var v = await Assert.ThrowsAsync<ModelNotFoundException>(async () => await h.Client.InferAsync("m", "9", FakeBackend.Request(1)));
        Assert.Contains("no version '9'", v.Message, StringComparison.Ordinal);
        using var ok = await h.Client.InferAsync("m", "1", FakeBackend.Request(1));
        Assert.True(ok.IsSuccess);
    }
}
