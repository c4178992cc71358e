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

    /// <summary>
    /// "small" (loaded) and "large", whose first load fails at once ("weights missing") and whose later loads wait at
    /// <paramref name="gate"/> and then fail the same way; a cascade and an adaptive model ("large" first) over both.
    /// </summary>
    private static async Task<ServiceProvider> CreateWithFailedLargeAsync(Gate gate, TaskCompletionSource reloadStarted)
    {
        int loads = 0;
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new FakeBackend("small"))
            .AddModel("large", _ =>
            {
                if (Interlocked.Increment(ref loads) > 1)
                {
                    reloadStarted.TrySetResult();
                    gate.Wait();
                }

                throw new InvalidOperationException("weights missing");
            }, o => o.Required = false)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.Custom(static _ => false)).Then("large"))
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
            });
        var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        return provider;
    }

    [Theory]
    [InlineData("cascade")]
    [InlineData("auto")]
    public async Task A_member_that_failed_to_load_is_passed_over_at_once_naming_it_while_its_load_is_retried_in_the_background(string model)
    {
        var gate = new Gate("the retried load of 'large'");
        var reloadStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var provider = await CreateWithFailedLargeAsync(gate, reloadStarted);
        var client = provider.GetRequiredService<IInferenceClient>();
        try
        {
            // The request does not wait for the retried load of "large" (held at the gate): "small" answers it. The
            // WaitAsync is only a safety net: before, the request waited for that load, which never ends here.
            using var r = await client.InferAsync(model, FakeBackend.Request(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("small", r.AnsweredBy);
            Assert.Contains("Model 'large' is not available: it failed to load (weights missing); the load is being retried.", r.Note, StringComparison.Ordinal);

            // The load is retried, as a direct request would retry it, so "large" can come back.
            await reloadStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            gate.Open();
        }
    }

    [Fact]
    public async Task An_adaptive_request_does_not_wait_for_a_variant_still_loading_while_a_faster_one_serves()
    {
        var gate = new Gate("the load of 'large'");
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new FakeBackend("small"))
            .AddModel("large", _ =>
            {
                gate.Wait();
                return new FakeBackend("large");
            })
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
            });
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var client = provider.GetRequiredService<IInferenceClient>();
        await registry.LoadAsync("small");
        var loadingLarge = registry.LoadAsync("large");
        try
        {
            Assert.Equal(ModelState.Loading, registry.GetModel("large").State);
            using var r = await client.InferAsync("auto", FakeBackend.Request(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("small", r.AnsweredBy);
            Assert.Contains("Model 'large' is not available: it is still loading.", r.Note, StringComparison.Ordinal);
        }
        finally
        {
            gate.Open();
        }

        await loadingLarge;
        using var later = await client.InferAsync("auto", FakeBackend.Request(2));
        Assert.Equal("large", later.AnsweredBy);
    }
}
