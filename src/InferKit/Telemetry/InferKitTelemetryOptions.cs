using System.Globalization;
using InferKit.Models;
using Microsoft.Extensions.Options;

namespace InferKit.Telemetry;

/// <summary>
/// Telemetry settings beyond metrics and traces (which are on whenever something listens): aggregate logs, the audit
/// hook and alert rules. Configure with <c>builder.ConfigureTelemetry(...)</c>, <c>AddAuditSink</c> or <c>AddAlertRules</c>.
/// </summary>
public sealed class InferKitTelemetryOptions
{
    /// <summary>
    /// How often refusals and dropped audit records are summarized in the log (one line per model and reason with the
    /// count since the last line, never one line per request). Default 10 seconds.
    /// </summary>
    public TimeSpan LogSummaryInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The audit hook's settings (used when a sink is added).</summary>
    public AuditOptions Audit { get; } = new();

    /// <summary>Alert rules and how they are evaluated.</summary>
    public AlertingOptions Alerts { get; } = new();
}

/// <summary>What the audit hook records and how much it buffers.</summary>
public sealed class AuditOptions
{
    /// <summary>
    /// The share of requests recorded, from 0 (none) to 1 (all, the default). Sampling is deterministic and even:
    /// of any N consecutive requests, N × rate (rounded down or up) are recorded.
    /// </summary>
    public double SamplingRate { get; set; } = 1.0;

    /// <summary>
    /// When true, records carry copies of the input and output tensors' data; when false (the default), only their
    /// names, element types and shapes.
    /// </summary>
    public bool CaptureTensorData { get; set; }

    /// <summary>
    /// How many records wait for a sink before new ones are dropped (and counted in <c>inferkit.audit.dropped</c>).
    /// A slow sink never slows inference. Default 1024.
    /// </summary>
    public int BufferCapacity { get; set; } = 1024;

    /// <summary>How long disposing the service provider waits for sinks to take the buffered records. Default 5 seconds.</summary>
    public TimeSpan FlushTimeout { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>Alert rules over a sliding window per model, evaluated on a timer.</summary>
public sealed class AlertingOptions
{
    /// <summary>
    /// How often rules are evaluated (on <see cref="TimeProvider"/>'s timer). Default 10 seconds; at most about 49.7 days,
    /// the longest period a timer accepts.
    /// </summary>
    public TimeSpan EvaluationInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The sliding window latency and rates are computed over, a whole number of evaluation intervals (rounded up).
    /// Default 1 minute.
    /// </summary>
    public TimeSpan Window { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>The rules. No rules (the default): nothing is collected and nothing evaluated.</summary>
    public IList<AlertRule> Rules { get; } = new List<AlertRule>();
}

/// <summary>What an alert rule watches.</summary>
public enum AlertMetric
{
    /// <summary>
    /// The 99th percentile of request duration, in seconds, over the window (requests that ran or timed out; refused and
    /// cancelled ones are left out). Resolution: at most 12.5% above the true value, never below it.
    /// </summary>
    P99Latency,

    /// <summary>The share (0..1) of requests in the window that ended in an error or past their deadline.</summary>
    ErrorRate,

    /// <summary>Requests waiting in the model's queue at evaluation time.</summary>
    QueueLength,

    /// <summary>The share (0..1) of requests in the window that were refused (queue full, deadline infeasible, ...).</summary>
    RefusalRate,
}

/// <summary>
/// One alert rule: it fires when its metric stays above <see cref="Threshold"/> for <see cref="FireAfter"/> evaluations
/// in a row, and clears when it stays below <see cref="ClearThreshold"/> (or at 0) for <see cref="ClearAfter"/> evaluations,
/// so a value near the threshold does not make it flap. While it fires, the model's health is Degraded.
/// </summary>
public sealed class AlertRule
{
    /// <summary>A unique name, used in events, logs and the <c>inferkit.alert.rule</c> tag.</summary>
    public string Name { get; set; } = string.Empty;

    /// <summary>What the rule watches.</summary>
    public AlertMetric Metric { get; set; }

    /// <summary>The model it applies to; null (the default) for every model.</summary>
    public string? Model { get; set; }

    /// <summary>The value above which the rule counts towards firing: seconds for latency, 0..1 for rates, requests for queue length.</summary>
    public double Threshold { get; set; }

    /// <summary>
    /// The value below which a firing rule counts towards clearing (a value of 0 always counts, so a clear threshold of 0
    /// clears at 0); at most <see cref="Threshold"/>. Null: 80% of <see cref="Threshold"/>.
    /// </summary>
    public double? ClearThreshold { get; set; }

    /// <summary>Evaluations in a row above the threshold before the rule fires. Default 3.</summary>
    public int FireAfter { get; set; } = 3;

    /// <summary>Evaluations in a row below the clear threshold before a firing rule clears. Default 3.</summary>
    public int ClearAfter { get; set; } = 3;

    /// <summary>
    /// Requests the window must hold before latency and rates are judged (fewer count as "below"), so one failure
    /// in a quiet minute does not fire an error-rate rule. Not used by <see cref="AlertMetric.QueueLength"/>. Default 10.
    /// </summary>
    public int MinimumRequests { get; set; } = 10;

    internal double EffectiveClearThreshold => ClearThreshold ?? Threshold * 0.8;

    /// <summary>A rule on the 99th percentile latency.</summary>
    /// <param name="name">The rule's name.</param>
    /// <param name="fireAbove">Fires above this latency.</param>
    /// <param name="clearBelow">Clears below this latency; null for 80% of <paramref name="fireAbove"/>.</param>
    /// <param name="model">The model; null for every model.</param>
    public static AlertRule P99LatencyAbove(string name, TimeSpan fireAbove, TimeSpan? clearBelow = null, string? model = null) => new()
    {
        Name = name,
        Metric = AlertMetric.P99Latency,
        Threshold = fireAbove.TotalSeconds,
        ClearThreshold = clearBelow?.TotalSeconds,
        Model = model,
    };

    /// <summary>A rule on the share of requests that failed or timed out.</summary>
    /// <param name="name">The rule's name.</param>
    /// <param name="fireAbove">Fires above this share (0..1).</param>
    /// <param name="clearBelow">Clears below this share; null for 80% of <paramref name="fireAbove"/>.</param>
    /// <param name="model">The model; null for every model.</param>
    public static AlertRule ErrorRateAbove(string name, double fireAbove, double? clearBelow = null, string? model = null) => new()
    {
        Name = name,
        Metric = AlertMetric.ErrorRate,
        Threshold = fireAbove,
        ClearThreshold = clearBelow,
        Model = model,
    };

    /// <summary>A rule on the share of requests refused.</summary>
    /// <param name="name">The rule's name.</param>
    /// <param name="fireAbove">Fires above this share (0..1).</param>
    /// <param name="clearBelow">Clears below this share; null for 80% of <paramref name="fireAbove"/>.</param>
    /// <param name="model">The model; null for every model.</param>
    public static AlertRule RefusalRateAbove(string name, double fireAbove, double? clearBelow = null, string? model = null) => new()
    {
        Name = name,
        Metric = AlertMetric.RefusalRate,
        Threshold = fireAbove,
        ClearThreshold = clearBelow,
        Model = model,
    };

    /// <summary>A rule on the number of queued requests.</summary>
    /// <param name="name">The rule's name.</param>
    /// <param name="fireAbove">Fires above this many queued requests.</param>
    /// <param name="clearBelow">Clears below this many; null for 80% of <paramref name="fireAbove"/>.</param>
    /// <param name="model">The model; null for every model.</param>
    public static AlertRule QueueLengthAbove(string name, int fireAbove, int? clearBelow = null, string? model = null) => new()
    {
        Name = name,
        Metric = AlertMetric.QueueLength,
        Threshold = fireAbove,
        ClearThreshold = clearBelow,
        Model = model,
    };

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Name}: {Metric} above {Threshold} for {FireAfter} evaluation(s), clears below {EffectiveClearThreshold} for {ClearAfter}{(Model is null ? string.Empty : " on model '" + Model + "'")}");
}

/// <summary>Checks <see cref="InferKitTelemetryOptions"/> and reports every problem in one message.</summary>
internal sealed class InferKitTelemetryOptionsValidator : IValidateOptions<InferKitTelemetryOptions>
{
    public ValidateOptionsResult Validate(string? name, InferKitTelemetryOptions options)
    {
        var errors = new List<string>();
        if (options.LogSummaryInterval <= TimeSpan.Zero)
        {
            errors.Add($"InferKitTelemetryOptions.LogSummaryInterval must be positive (it is {options.LogSummaryInterval}).");
        }

        var audit = options.Audit;
        if (!(audit.SamplingRate is >= 0 and <= 1))
        {
            errors.Add($"AuditOptions.SamplingRate must be between 0 and 1 (it is {audit.SamplingRate.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (audit.BufferCapacity < 1)
        {
            errors.Add($"AuditOptions.BufferCapacity must be at least 1 (it is {audit.BufferCapacity}).");
        }

        if (audit.FlushTimeout < TimeSpan.Zero)
        {
            errors.Add($"AuditOptions.FlushTimeout must be zero or positive (it is {audit.FlushTimeout}).");
        }

        var alerts = options.Alerts;
        if (alerts.EvaluationInterval <= TimeSpan.Zero)
        {
            errors.Add($"AlertingOptions.EvaluationInterval must be positive (it is {alerts.EvaluationInterval}).");
        }
        else if (alerts.EvaluationInterval > ModelOptionsValidator.MaxDuration)
        {
            // The period of the evaluation timer (LogSummaryInterval and FlushTimeout are clamped instead: they are waits).
            errors.Add($"AlertingOptions.EvaluationInterval must be at most {ModelOptionsValidator.MaxDuration}, the longest a timer waits (it is {alerts.EvaluationInterval}).");
        }

        if (alerts.Window < alerts.EvaluationInterval)
        {
            errors.Add($"AlertingOptions.Window ({alerts.Window}) must be at least the evaluation interval ({alerts.EvaluationInterval}).");
        }
        else if (alerts.EvaluationInterval > TimeSpan.Zero && alerts.Window.Ticks / alerts.EvaluationInterval.Ticks > 1000)
        {
            errors.Add($"AlertingOptions.Window ({alerts.Window}) must span at most 1000 evaluation intervals ({alerts.EvaluationInterval}).");
        }

        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < alerts.Rules.Count; i++)
        {
            var rule = alerts.Rules[i];
            if (rule is null)
            {
                errors.Add($"AlertingOptions.Rules[{i}] is null.");
                continue;
            }

            string label = string.IsNullOrWhiteSpace(rule.Name) ? $"AlertingOptions.Rules[{i}]" : $"Alert rule '{rule.Name}'";
            if (string.IsNullOrWhiteSpace(rule.Name))
            {
                errors.Add($"{label}: Name is required.");
            }
            else if (!names.Add(rule.Name))
            {
                errors.Add($"{label}: another rule has the same name; names must be unique.");
            }

            if (!Enum.IsDefined(rule.Metric))
            {
                errors.Add($"{label}: Metric {(int)rule.Metric} is not one of {string.Join(", ", Enum.GetNames<AlertMetric>())}.");
            }

            if (!(rule.Threshold >= 0) || double.IsInfinity(rule.Threshold))
            {
                errors.Add($"{label}: Threshold must be a finite number, zero or more (it is {rule.Threshold.ToString(CultureInfo.InvariantCulture)}).");
            }

            if ((rule.Metric is AlertMetric.ErrorRate or AlertMetric.RefusalRate) && rule.Threshold > 1)
            {
                errors.Add($"{label}: a rate Threshold is a share between 0 and 1 (it is {rule.Threshold.ToString(CultureInfo.InvariantCulture)}).");
            }

            double clear = rule.EffectiveClearThreshold;
            if (!(clear >= 0) || clear > rule.Threshold)
            {
                errors.Add($"{label}: ClearThreshold must be between 0 and Threshold ({rule.Threshold.ToString(CultureInfo.InvariantCulture)}); it is {clear.ToString(CultureInfo.InvariantCulture)}.");
            }

            if (rule.FireAfter < 1 || rule.ClearAfter < 1)
            {
                errors.Add($"{label}: FireAfter and ClearAfter must be at least 1 (they are {rule.FireAfter} and {rule.ClearAfter}).");
            }

            if (rule.MinimumRequests < 0)
            {
                errors.Add($"{label}: MinimumRequests must be zero or more (it is {rule.MinimumRequests}).");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
