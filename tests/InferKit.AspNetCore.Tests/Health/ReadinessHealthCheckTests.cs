using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace InferKit.AspNetCore.Tests.Health;

public sealed class ReadinessHealthCheckTests
{
    [Fact]
    public async Task The_readiness_check_is_unhealthy_until_required_models_load_and_names_them()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()).AddModel("optional", _ => new AffineBackend(), o => o.Required = false),
            configure: b => b.Services.AddHealthChecks().AddInferKitReadinessCheck(),
            middleware: app => app.MapHealthChecks("/healthz"),
            load: false);
        var checks = host.App.Services.GetRequiredService<HealthCheckService>();

        var before = await checks.CheckHealthAsync();
        Assert.Equal(HealthStatus.Unhealthy, before.Status);
        var entry = before.Entries["inferkit"];
        Assert.Contains("'affine'", entry.Description, StringComparison.Ordinal);
        Assert.DoesNotContain("'optional'", entry.Description, StringComparison.Ordinal);
        Assert.Contains("ready", entry.Tags);
        using (var probe = await host.Client.GetAsync("/healthz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, probe.StatusCode);
        }

        await host.LoadAsync();
        var after = await checks.CheckHealthAsync();
        Assert.Equal(HealthStatus.Healthy, after.Status);
        Assert.Equal("Ready", after.Entries["inferkit"].Data["affine"]);
        using (var probe = await host.Client.GetAsync("/healthz"))
        {
            Assert.Equal(HttpStatusCode.OK, probe.StatusCode);
        }

        host.App.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        var stopping = await checks.CheckHealthAsync();
        Assert.Equal(HealthStatus.Unhealthy, stopping.Status);
        Assert.Contains("stopping", stopping.Entries["inferkit"].Description, StringComparison.Ordinal);
    }
}
