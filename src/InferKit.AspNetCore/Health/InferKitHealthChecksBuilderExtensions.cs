using InferKit.AspNetCore.Health;
using InferKit.Models;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds InferKit's readiness to ASP.NET Core health checks.</summary>
public static class InferKitHealthChecksBuilderExtensions
{
    /// <summary>The default name of the readiness check.</summary>
    public const string DefaultName = "inferkit";

    /// <summary>
    /// Adds a check that is healthy when every required model is loaded and warmed, and reports each model's state in
    /// its data. It turns unhealthy as soon as the host starts stopping, so a load balancer stops sending work while
    /// InferKit drains. Map it with, for example, <c>app.MapHealthChecks("/healthz/ready", new() { Predicate = c =&gt; c.Tags.Contains("ready") })</c>.
    /// </summary>
    /// <param name="builder">The health checks builder from <c>services.AddHealthChecks()</c>.</param>
    /// <param name="name">The check's name.</param>
    /// <param name="failureStatus">The status reported when not ready; null for <see cref="HealthStatus.Unhealthy"/>.</param>
    /// <param name="tags">Tags for filtering; null for <c>["ready"]</c>.</param>
    /// <returns>The builder.</returns>
    public static IHealthChecksBuilder AddInferKitReadinessCheck(this IHealthChecksBuilder builder, string name = DefaultName, HealthStatus? failureStatus = null, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(name);
        return builder.Add(new HealthCheckRegistration(
            name,
            static sp => new InferKitReadinessHealthCheck(sp.GetRequiredService<IModelRegistry>(), sp.GetService<IHostApplicationLifetime>()),
            failureStatus,
            tags ?? ["ready"]));
    }
}
