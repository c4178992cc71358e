using System.Globalization;
namespace InferKit.Telemetry;

/// <summary>Whether an alert started or stopped firing.</summary>
public enum AlertState
{
    /// <summary>The rule's metric stayed above its threshold long enough: the alert fires (the model's health is Degraded).</summary>
    Firing,

    /// <summary>The rule's metric stayed below its clear threshold long enough: the alert is resolved.</summary>
    Resolved,
}

/// <summary>An alert rule started or stopped firing for one model.</summary>
public sealed class AlertEvent
{
    internal AlertEvent(AlertRule rule, string model, string version, AlertState state, double value, DateTimeOffset timestamp)
    {
        Rule = rule.Name;
        Metric = rule.Metric;
        Model = model;
        Version = version;
        State = state;
        Value = value;
        Threshold = state == AlertState.Firing ? rule.Threshold : rule.EffectiveClearThreshold;
        Timestamp = timestamp;
    }

    /// <summary>The rule's name.</summary>
    public string Rule { get; }

    /// <summary>What the rule watches.</summary>
    public AlertMetric Metric { get; }

    /// <summary>The model.</summary>
    public string Model { get; }

    /// <summary>The model version whose window was evaluated.</summary>
    public string Version { get; }

    /// <summary>Firing or resolved.</summary>
    public AlertState State { get; }

    /// <summary>The metric's value at this evaluation (seconds, a 0..1 share, or queued requests).</summary>
    public double Value { get; }

    /// <summary>The threshold crossed: the rule's threshold when firing, its clear threshold when resolved.</summary>
    public double Threshold { get; }

    /// <summary>When it was evaluated (from the configured <see cref="TimeProvider"/>).</summary>
    public DateTimeOffset Timestamp { get; }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Rule} {State} for model '{Model}' version '{Version}': {Metric} = {Value:G4} (threshold {Threshold:G4})");
}

/// <summary>
/// InferKit's alerts: subscribe to be told when a rule starts or stops firing (events are raised on the evaluation
/// timer's thread; keep observers quick), or read what fires now. Rules are added with <c>builder.AddAlertRules(...)</c>.
/// </summary>
public interface IInferKitAlerts : IObservable<AlertEvent>
{
    /// <summary>The alerts firing now: the <see cref="AlertState.Firing"/> event of each.</summary>
    IReadOnlyList<AlertEvent> Firing { get; }

    /// <summary>True when any rule fires for <paramref name="model"/>.</summary>
    bool IsFiring(string model);
}
