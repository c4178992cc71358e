using System.Diagnostics.Metrics;
using InferKit.Models;
using InferKit.Selection;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace InferKit.Tests.Selection;

/// <summary>What the registry reports for a cascade or adaptive model whose members are not all serving.</summary>
public sealed class VirtualModelStateTests
{
    /// <summary>"small" and "large" (fake backends; "large" fails to load when <paramref name="largeFails"/>), a cascade over both and an adaptive model over both.</summary>
    private static ServiceProvider Create(bool largeFails = false, bool adaptiveSmallFirst = false)
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new FakeBackend("small"))
            .AddModel("large", _ => largeFails ? throw new InvalidOperationException("weights missing") : new FakeBackend("large"), o => o.Required = false)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"))
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add(adaptiveSmallFirst ? "small" : "large");
                a.Variants.Add(adaptiveSmallFirst ? "large" : "small");
            });
        return services.BuildServiceProvider();
    }

    [Fact]
    public async Task A_virtual_model_is_ready_only_when_every_member_is_and_otherwise_names_the_member_that_is_not()
    {
        await using var provider = Create(adaptiveSmallFirst: true);
        var registry = provider.GetRequiredService<IModelRegistry>();

        // Only the first member of each is loaded.
        await registry.LoadAsync("small");
        var cascade = registry.GetModel("cascade");
        Assert.Equal(ModelState.NotLoaded, cascade.State);
        Assert.False(cascade.IsReady);
        Assert.Equal("stage 2 ('large') is not loaded", cascade.Error);
        var auto = registry.GetModel("auto");
        Assert.Equal(ModelState.NotLoaded, auto.State);
        Assert.Equal("variant 'large' is not loaded", auto.Error);

        await registry.LoadAsync("large");
        Assert.Equal(ModelState.Ready, registry.GetModel("cascade").State);
        Assert.Null(registry.GetModel("cascade").Error);
        Assert.True(registry.GetModel("auto").IsReady);
    }

    [Fact]
    public async Task A_virtual_model_whose_member_failed_to_load_is_failed_and_says_which_member_and_why()
    {
        await using var provider = Create(largeFails: true);
        var registry = provider.GetRequiredService<IModelRegistry>();
        await registry.LoadAllAsync();

        var cascade = registry.GetModel("cascade");
        Assert.Equal(ModelState.Failed, cascade.State);
        Assert.Equal("stage 2 ('large') failed to load: weights missing", cascade.Error);
        var auto = registry.GetModel("auto");
        Assert.Equal(ModelState.Failed, auto.State);
        Assert.Equal("variant 'large' failed to load: weights missing", auto.Error);

        // The state gauge reads the same description.
        using var state = new MetricCollector<int>(provider.GetRequiredService<IMeterFactory>(), InferKitTelemetry.Name, InferKitTelemetry.Instruments.ModelState);
        state.RecordObservableInstruments();
        var failed = state.GetMeasurementSnapshot().Where(m => Equals(m.Tags[InferKitTelemetry.StateTag], "failed") && m.Value == 1)
            .Select(m => (string)m.Tags[InferKitTelemetry.ModelTag]!).Order().ToArray();
        Assert.Equal(["auto", "cascade", "large"], failed);
    }

    [Fact]
    public async Task A_virtual_model_reports_the_signature_of_its_first_loaded_member()
    {
        await using var provider = Create();
        var registry = provider.GetRequiredService<IModelRegistry>();
        await registry.LoadAsync("small");

        // "auto" lists "large" first, which is not loaded: its inputs and outputs are still known from "small".
        var auto = registry.GetModel("auto");
        Assert.NotNull(auto.Signature);
        Assert.Equal("x", Assert.Single(auto.Signature.Inputs).Name);
    }
}
