using InferKit.Models;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace InferKit.AspNetCore.Health;

/// <summary>Healthy when every required model is loaded and warmed and the host is not stopping.</summary>
internal sealed class InferKitReadinessHealthCheck : IHealthCheck
{
    private readonly IModelRegistry _registry;
    private readonly IHostApplicationLifetime? _lifetime;

    public InferKitReadinessHealthCheck(IModelRegistry registry, IHostApplicationLifetime? lifetime)
    {
        _registry = registry;
        _lifetime = lifetime;
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        var notReady = new List<string>();
        foreach (var model in _registry.DescribeAll())
        {
            string name = model.Name;
            data[name] = model.State.ToString();
            if (model.Required && !model.IsReady)
            {
                notReady.Add(model.Error is null ? $"'{name}' is {model.State}" : $"'{name}' is {model.State}: {model.Error}");
            }
        }

        if (_lifetime?.ApplicationStopping.IsCancellationRequested == true)
        {
            return Task.FromResult(new HealthCheckResult(context.Registration.FailureStatus, "The host is stopping; InferKit takes no new requests.", data: data));
        }

        if (_registry.AllRequiredModelsReady)
        {
            return Task.FromResult(HealthCheckResult.Healthy("Every required model is ready.", data));
        }

        string description = notReady.Count == 0
            ? "Not every required model is ready."
            : "Required models not ready: " + string.Join("; ", notReady) + ".";
        return Task.FromResult(new HealthCheckResult(context.Registration.FailureStatus, description, data: data));
    }
}
