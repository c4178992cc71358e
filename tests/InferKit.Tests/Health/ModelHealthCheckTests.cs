using InferKit.Backends;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using InferKit.Tests.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace InferKit.Tests.Health;

public sealed class ModelHealthCheckTests
{
    private static TelemetryHarness Create(Action<ModelOptions>? configure = null, int instances = 1, Func<FakeBackend, IModelBackend>? wrap = null,
        Action<IInferKitBuilder>? inferKit = null) =>
        TelemetryHarness.Create(configure, instances, services: s => s.AddHealthChecks().AddInferKitHealthChecks(), wrap: wrap, inferKit: inferKit);

    private static async Task<HealthReportEntry> CheckAsync(IServiceProvider services)
    {
        var report = await services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        return report.Entries[InferKitModelHealthCheckExtensions.DefaultName];
    }

    private static IReadOnlyDictionary<string, object> ModelData(HealthReportEntry entry, string model = "m") => (IReadOnlyDictionary<string, object>)entry.Data[model];

    [Fact]
    public async Task A_loaded_model_with_every_instance_in_rotation_is_healthy_with_its_details()
    {
        await using var h = Create(instances: 2);
        await h.LoadAsync();
        var entry = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Healthy, entry.Status);
        Assert.Equal("1 model(s) healthy.", entry.Description);
        var data = ModelData(entry);
        Assert.Equal("Healthy", data["status"]);
        Assert.Equal("Ready", data["state"]);
        Assert.Equal("1", data["version"]);
        Assert.Equal(2, data["instances"]);
        Assert.Empty((string[])data["instancesTakenOut"]);
    }

    [Fact]
    public async Task A_required_model_not_loaded_yet_is_unhealthy()
    {
        await using var h = Create();
        var entry = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Unhealthy, entry.Status);
        Assert.Equal("'m' is Unhealthy: not loaded.", entry.Description);
        Assert.Equal("NotLoaded", ModelData(entry)["state"]);
    }

    [Fact]
    public async Task An_instance_taken_out_degrades_the_model_and_every_instance_out_makes_it_unhealthy()
    {
        await using var h = Create(o =>
        {
            o.Health.FailureThreshold = 1;
            o.Health.BackOff = TimeSpan.FromMinutes(1);
            o.Health.RetryOnAnotherInstance = false;
            o.LoadBalancing = InferKit.LoadBalancing.LoadBalancingStrategies.RoundRobin;
        }, instances: 2);
        await h.LoadAsync();
        foreach (var b in h.Backends)
        {
            b.Failure = () => new InvalidOperationException("boom");
        }

        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        var degraded = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Single((string[])ModelData(degraded)["instancesTakenOut"]);
        Assert.Contains("1 of 2 instance(s) taken out of rotation", degraded.Description, StringComparison.Ordinal);

        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(2));
        var unhealthy = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Unhealthy, unhealthy.Status);
        Assert.Equal(2, ((string[])ModelData(unhealthy)["instancesTakenOut"]).Length);
        Assert.Contains("no ready instance", unhealthy.Description, StringComparison.Ordinal);
    }

    /// <summary>
    /// An optional model with every instance taken out serves nothing, as an optional model that failed to load serves
    /// nothing: it degrades the check, and only a required one makes it unhealthy (so an optional model's failures do not
    /// fail the whole app's health, as they do not fail its readiness).
    /// </summary>
    [Fact]
    public async Task An_optional_model_with_every_instance_taken_out_is_only_degraded()
    {
        await using var h = Create(o =>
        {
            o.Required = false;
            o.Health.FailureThreshold = 1;
            o.Health.BackOff = TimeSpan.FromMinutes(1);
            o.Health.RetryOnAnotherInstance = false;
        });
        await h.LoadAsync();
        h.Backend.Failure = () => new InvalidOperationException("boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        var entry = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Equal("Degraded", ModelData(entry)["status"]);
        Assert.Single((string[])ModelData(entry)["instancesTakenOut"]);
        Assert.Contains("no ready instance", entry.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_fallback_execution_provider_degrades_the_model()
    {
        await using var h = Create(wrap: b => new FallbackBackend(b));
        await h.LoadAsync();
        var entry = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Equal(["m/1/0 on CPU instead of CUDA"], (string[])ModelData(entry)["fallbackProviders"]);
    }

    [Fact]
    public async Task A_failed_required_model_is_unhealthy_and_a_failed_optional_one_only_degraded()
    {
        var sc = new ServiceCollection();
        sc.AddHealthChecks().AddInferKitHealthChecks(failureStatus: HealthStatus.Degraded, name: "custom");
        sc.AddInferKit()
            .AddModel("required", _ => throw new InvalidOperationException("no weights"))
            .AddModel("optional", _ => throw new InvalidOperationException("no weights either"), o => o.Required = false);
        await using var sp = sc.BuildServiceProvider();
        await Assert.ThrowsAnyAsync<Exception>(() => sp.GetRequiredService<IModelRegistry>().LoadAllAsync());
        var report = await sp.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        var entry = report.Entries["custom"];

        // The registration's failure status replaces Unhealthy.
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Equal("Unhealthy", ModelData(entry, "required")["status"]);
        Assert.Equal("Degraded", ModelData(entry, "optional")["status"]);
        Assert.Contains("no weights either", (string)ModelData(entry, "optional")["error"], StringComparison.Ordinal);
        Assert.Contains("'required' is Unhealthy: failed to load", entry.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_virtual_model_is_judged_by_its_state_and_its_members_on_their_own()
    {
        var second = new FakeBackend("second");
        await using var h = Create(inferKit: b => b.AddModel("m2", _ => second).AddAdaptiveModel("auto", o =>
        {
            o.Variants.Add("m");
            o.Variants.Add("m2");
        }));
        await h.LoadAsync();
        var entry = await CheckAsync(h.Services);
        Assert.Equal(HealthStatus.Healthy, entry.Status);
        Assert.Equal("3 model(s) healthy.", entry.Description);
        Assert.Equal("Ready", ModelData(entry, "auto")["state"]);
        Assert.Equal("Healthy", ModelData(entry, "m2")["status"]);
    }

    [Fact]
    public async Task A_virtual_model_whose_member_failed_is_degraded_naming_that_member_and_agrees_with_the_registry()
    {
        await using var h = Create(inferKit: b => b
            .AddModel("broken", _ => throw new InvalidOperationException("weights missing"), o => o.Required = false)
            .AddCascade("cascade", c => c.Then("m", InferKit.Selection.AcceptanceRule.TopProbability(0.9)).Then("broken")));
        await h.LoadAsync();
        var entry = await CheckAsync(h.Services);
        var cascade = ModelData(entry, "cascade");
        Assert.Equal("Degraded", cascade["status"]);
        Assert.Equal(h.Registry.GetModel("cascade").State.ToString(), cascade["state"]);
        Assert.Equal("Failed", cascade["state"]);
        Assert.Equal(["stage 2 ('broken') failed to load: weights missing"], (string[])cascade["reasons"]);
        Assert.Contains("'cascade' is Degraded: stage 2 ('broken') failed to load: weights missing", entry.Description, StringComparison.Ordinal);
        Assert.Equal("Healthy", ModelData(entry, "m")["status"]);
    }

    /// <summary>A fake instance that asked for CUDA and got CPU.</summary>
    private sealed class FallbackBackend(FakeBackend inner) : IModelBackend
    {
        public ModelSignature Signature => inner.Signature;

        public ExecutionProviderInfo Provider { get; } = new("CPU", "CUDA", 0, "CUDA is not available in this process.");

        public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken) => inner.Run(inputs, sink, cancellationToken);

        public void Dispose() => inner.Dispose();
    }
}
