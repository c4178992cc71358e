using InferKit.Health;
using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds InferKit's per-model health check to <c>services.AddHealthChecks()</c>.</summary>
public static class InferKitModelHealthCheckExtensions
{
    /// <summary>The default name of the check.</summary>
    public const string DefaultName = "inferkit-models";

    /// <summary>
    /// Adds a check over every model: Healthy when each is loaded, warmed and has every instance in rotation; Degraded
    /// when an alert rule fires for a model, an instance is taken out of rotation, a fallback execution provider serves,
    /// or an optional model failed or has every instance taken out; Unhealthy (or <paramref name="failureStatus"/>) when a
    /// required model has no ready instance. The result's data has one entry per model (status, state, version, instances taken out, fallback
    /// providers, alerts firing, reasons).
    /// </summary>
    /// <param name="builder">The health checks builder.</param>
    /// <param name="name">The check's name.</param>
    /// <param name="failureStatus">The status reported instead of Unhealthy; null for Unhealthy.</param>
    /// <param name="tags">Tags for filtering; null for <c>["inferkit"]</c>.</param>
    /// <returns>The builder.</returns>
    public static IHealthChecksBuilder AddInferKitHealthChecks(this IHealthChecksBuilder builder, string name = DefaultName, HealthStatus? failureStatus = null, IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(name);
        return builder.Add(new HealthCheckRegistration(
            name,
            static sp => new InferKitModelsHealthCheck(sp.GetRequiredService<IModelRegistry>(), sp.GetService<IInferKitAlerts>(), sp.GetService<TimeProvider>() ?? TimeProvider.System),
            failureStatus,
            tags ?? ["inferkit"]));
    }
}
