using InferKit.Telemetry;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Configures InferKit's telemetry: the audit hook, alert rules and aggregate logs. Metrics and traces need no setup here.</summary>
public static class InferKitTelemetryBuilderExtensions
{
    /// <summary>Configures telemetry settings (log summary interval, audit, alerts).</summary>
    /// <param name="builder">The InferKit builder.</param>
    /// <param name="configure">Changes the settings.</param>
    /// <returns>The builder.</returns>
    public static IInferKitBuilder ConfigureTelemetry(this IInferKitBuilder builder, Action<InferKitTelemetryOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.Configure(configure);
        return builder;
    }

    /// <summary>
    /// Adds an audit sink (a singleton resolved from the container) that receives a record of every sampled request
    /// through its own bounded buffer and background loop; a slow sink never slows inference. The sink is created
    /// with InferKit's telemetry, before the model registry: it must not depend on <c>IInferenceClient</c> or
    /// <c>IModelRegistry</c>.
    /// </summary>
    /// <typeparam name="TSink">The sink type.</typeparam>
    /// <param name="builder">The InferKit builder.</param>
    /// <param name="configure">Sampling, tensor data capture and buffer size (shared by every sink).</param>
    /// <returns>The builder.</returns>
    public static IInferKitBuilder AddAuditSink<TSink>(this IInferKitBuilder builder, Action<AuditOptions>? configure = null)
        where TSink : class, IInferenceAuditSink
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IInferenceAuditSink, TSink>());
        ConfigureAudit(builder, configure);
        return builder;
    }

    /// <summary>Adds an audit sink instance.</summary>
    /// <param name="builder">The InferKit builder.</param>
    /// <param name="sink">The sink.</param>
    /// <param name="configure">Sampling, tensor data capture and buffer size (shared by every sink).</param>
    /// <returns>The builder.</returns>
    public static IInferKitBuilder AddAuditSink(this IInferKitBuilder builder, IInferenceAuditSink sink, Action<AuditOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(sink);
        builder.Services.AddSingleton(sink);
        ConfigureAudit(builder, configure);
        return builder;
    }

    /// <summary>
    /// Adds alert rules (thresholds on p99 latency, error rate, queue length and refusal rate over a sliding window per
    /// model). Subscribe through <see cref="IInferKitAlerts"/>; a firing rule makes the model Degraded in
    /// <c>AddInferKitHealthChecks()</c>.
    /// </summary>
    /// <param name="builder">The InferKit builder.</param>
    /// <param name="configure">Adds rules and sets the window and evaluation interval.</param>
    /// <returns>The builder.</returns>
    public static IInferKitBuilder AddAlertRules(this IInferKitBuilder builder, Action<AlertingOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.Configure<InferKitTelemetryOptions>(o => configure(o.Alerts));
        return builder;
    }

    private static void ConfigureAudit(IInferKitBuilder builder, Action<AuditOptions>? configure)
    {
        if (configure is not null)
        {
            builder.Services.Configure<InferKitTelemetryOptions>(o => configure(o.Audit));
        }
    }
}

/// <summary>The telemetry services AddInferKit registers.</summary>
internal static class InferKitTelemetryServices
{
    public static void Add(IServiceCollection services)
    {
        services.AddOptions<InferKitTelemetryOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<InferKitTelemetryOptions>, InferKitTelemetryOptionsValidator>());
        services.TryAddSingleton(InferKitMetrics.Create);
        services.TryAddSingleton<IInferKitAlerts>(static sp => sp.GetRequiredService<InferKitMetrics>().Alerts);
    }
}
