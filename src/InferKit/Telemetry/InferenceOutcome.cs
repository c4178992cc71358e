namespace InferKit.Telemetry;

/// <summary>How one request ended: the <c>inferkit.outcome</c> tag, audit records and alert rates use it.</summary>
public enum InferenceOutcome
{
    /// <summary>Answered with outputs (tag <c>success</c>).</summary>
    Success = 0,

    /// <summary>Refused at admission or before it ran (tag <c>refused</c>); see <see cref="RefusalReason"/>.</summary>
    Refused,

    /// <summary>Its deadline passed before it could be answered (tag <c>deadline_exceeded</c>).</summary>
    DeadlineExceeded,

    /// <summary>The caller cancelled it (tag <c>cancelled</c>).</summary>
    Cancelled,

    /// <summary>Its batch failed on the backend (tag <c>error</c>).</summary>
    Error,
}

/// <summary>Tag values for <see cref="InferenceOutcome"/> and <see cref="RefusalReason"/>, allocated once.</summary>
internal static class TelemetryNames
{
    private static readonly string[] Outcomes = ["success", "refused", "deadline_exceeded", "cancelled", "error"];

    private static readonly string[] Reasons = ["none", "queue_full", "deadline_infeasible", "no_healthy_instance", "model_not_ready", "shutting_down", "overloaded"];

    private static readonly string[] States = ["not_loaded", "loading", "ready", "failed", "draining", "unloaded"];

    public static int ReasonCount => Reasons.Length;

    public static int StateCount => States.Length;

    public static string Outcome(InferenceOutcome outcome) => (uint)outcome < (uint)Outcomes.Length ? Outcomes[(int)outcome] : "unknown";

    public static string Reason(RefusalReason reason) => (uint)reason < (uint)Reasons.Length ? Reasons[(int)reason] : "unknown";

    public static string State(int state) => (uint)state < (uint)States.Length ? States[state] : "unknown";
}
