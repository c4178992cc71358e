using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace InferKit.Health;

/// <summary>
/// The health of every model: Healthy when loaded, warmed and every instance in rotation; Degraded when an alert fires,
/// an instance is taken out, a fallback execution provider serves, or an optional model failed or has every instance
/// taken out; Unhealthy when a required model has no ready instance (not loaded, loading, failed, draining, or every
/// instance taken out).
/// A virtual model (cascade, adaptive) is judged by its state, which is Ready only when every member is (see
/// <see cref="ModelInfo.State"/>); its reasons name the members that are not ready. Its members are listed and judged on their own.
/// The data holds one entry per model with the details.
/// </summary>
internal sealed class InferKitModelsHealthCheck : IHealthCheck
{
    private readonly IModelRegistry _registry;
    private readonly IInferKitAlerts? _alerts;
    private readonly TimeProvider _time;

    public InferKitModelsHealthCheck(IModelRegistry registry, IInferKitAlerts? alerts, TimeProvider time)
    {
        _registry = registry;
        _alerts = alerts;
        _time = time;
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        var now = _time.GetUtcNow();
        var firing = _alerts?.Firing ?? [];
        var data = new Dictionary<string, object>(StringComparer.Ordinal);
        var problems = new List<string>();
        var worst = HealthStatus.Healthy;
        int models = 0;
        foreach (var model in _registry.DescribeAll())
        {
            string name = model.Name;
            models++;
            var health = Assess(model, firing, now);
            data[name] = health.ToData();
            if (health.Status < worst)
            {
                worst = health.Status;
            }

            if (health.Status != HealthStatus.Healthy)
            {
                problems.Add($"'{name}' is {health.Status}: {string.Join("; ", health.Reasons)}");
            }
        }

        if (worst == HealthStatus.Healthy)
        {
            return Task.FromResult(HealthCheckResult.Healthy($"{models} model(s) healthy.", data));
        }

        var status = worst == HealthStatus.Unhealthy ? context.Registration.FailureStatus : HealthStatus.Degraded;
        return Task.FromResult(new HealthCheckResult(status, string.Join(" ", problems) + ".", data: data));
    }

    internal static ModelHealth Assess(ModelInfo model, IReadOnlyList<AlertEvent> firing, DateTimeOffset now)
    {
        var health = new ModelHealth(model);
        bool isVirtual = !string.Equals(model.Kind, "model", StringComparison.Ordinal);

        // A cascade or adaptive model is not ready while a member is not (ModelInfo.State); the registry's description
        // then names those members and why ("stage 2 ('large') failed to load: ..."), which is the reason given here.
        string? members = isVirtual ? model.Error : null;
        switch (model.State)
        {
            case ModelState.Ready:
                break;
            case ModelState.NotLoaded:
            case ModelState.Loading:
                if (model.Required)
                {
                    health.Worsen(HealthStatus.Unhealthy, members ?? (model.State == ModelState.Loading ? "loading, not ready yet" : "not loaded"));
                }

                return health;
            case ModelState.Failed:
                health.Worsen(model.Required ? HealthStatus.Unhealthy : HealthStatus.Degraded, members ?? $"failed to load: {model.Error ?? "unknown error"}");
                return health;
            default:
                health.Worsen(model.Required ? HealthStatus.Unhealthy : HealthStatus.Degraded, members ?? $"{model.State.ToString().ToLowerInvariant()}, takes no new requests");
                return health;
        }

        if (isVirtual)
        {
            return health; // a cascade or adaptive model: its members are assessed (and listed) on their own
        }

        int inRotation = 0;
        foreach (var instance in model.Instances)
        {
            if (instance.OutUntil is { } until)
            {
                health.TakenOut.Add(instance.Id);
                if (until <= now)
                {
                    inRotation++; // its back-off has passed: it takes work again (a good run restores it fully)
                }
            }
            else
            {
                inRotation++;
            }

            if (instance.Provider.IsFallback)
            {
                health.Fallback.Add($"{instance.Id} on {instance.Provider.Name} instead of {instance.Provider.Requested}");
            }
        }

        if (inRotation == 0)
        {
            // As for a model that failed to load: only a required model makes the check unhealthy; an optional one degrades it.
            health.Worsen(model.Required ? HealthStatus.Unhealthy : HealthStatus.Degraded,
                model.Instances.Count == 0 ? "no instance" : "no ready instance: every instance is taken out of rotation");
        }
        else if (health.TakenOut.Count > 0)
        {
            health.Worsen(HealthStatus.Degraded, $"{health.TakenOut.Count} of {model.Instances.Count} instance(s) taken out of rotation ({string.Join(", ", health.TakenOut)})");
        }

        if (health.Fallback.Count > 0)
        {
            health.Worsen(HealthStatus.Degraded, $"fallback execution provider serving ({string.Join(", ", health.Fallback)})");
        }

        foreach (var alert in firing)
        {
            if (string.Equals(alert.Model, model.Name, StringComparison.Ordinal))
            {
                health.Alerts.Add(alert.Rule);
            }
        }

        if (health.Alerts.Count > 0)
        {
            health.Worsen(HealthStatus.Degraded, $"alert(s) firing: {string.Join(", ", health.Alerts)}");
        }

        return health;
    }

    /// <summary>One model's assessment.</summary>
    internal sealed class ModelHealth(ModelInfo model)
    {
        public ModelInfo Model { get; } = model;

        public HealthStatus Status { get; private set; } = HealthStatus.Healthy;

        public List<string> Reasons { get; } = [];

        public List<string> TakenOut { get; } = [];

        public List<string> Fallback { get; } = [];

        public List<string> Alerts { get; } = [];

        public void Worsen(HealthStatus status, string reason)
        {
            if (status < Status)
            {
                Status = status;
            }

            Reasons.Add(reason);
        }

        public IReadOnlyDictionary<string, object> ToData()
        {
            var d = new Dictionary<string, object>(StringComparer.Ordinal)
            {
                ["status"] = Status.ToString(),
                ["state"] = Model.State.ToString(),
                ["version"] = Model.Version,
                ["required"] = Model.Required,
                ["instances"] = Model.Instances.Count,
                ["instancesTakenOut"] = TakenOut.ToArray(),
                ["fallbackProviders"] = Fallback.ToArray(),
                ["alertsFiring"] = Alerts.ToArray(),
                ["reasons"] = Reasons.ToArray(),
            };
            if (Model.Error is not null)
            {
                d["error"] = Model.Error;
            }

            return d;
        }
    }
}
