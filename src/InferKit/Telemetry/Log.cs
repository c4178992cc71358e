using Microsoft.Extensions.Logging;

namespace InferKit.Telemetry;

/// <summary>
/// InferKit's log messages. Event ids are stable: 1xxx models, 2xxx scheduling, 3xxx instances and balancing, 4xxx alerts,
/// 5xxx audit. Nothing is logged per request at Information or above: refusals and audit drops are summarized per interval.
/// </summary>
internal static partial class Log
{
    [LoggerMessage(1001, LogLevel.Information, "Model '{Model}' version '{Version}' loaded: {Instances} instance(s) on {Provider} in {ElapsedMs:F0} ms")]
    public static partial void ModelLoaded(ILogger logger, string model, string version, int instances, string provider, double elapsedMs);

    [LoggerMessage(1002, LogLevel.Error, "Model '{Model}' failed to load")]
    public static partial void ModelLoadFailed(ILogger logger, string model, Exception exception);

    [LoggerMessage(1003, LogLevel.Information, "Model '{Model}' version '{Version}' unloaded")]
    public static partial void ModelUnloaded(ILogger logger, string model, string version);

    [LoggerMessage(1004, LogLevel.Warning, "Model '{Model}': execution provider {Requested} (device {DeviceId}) is unavailable; serving on CPU instead. {Reason}")]
    public static partial void ProviderFallback(ILogger logger, string model, string requested, int deviceId, string reason);

    [LoggerMessage(1005, LogLevel.Debug, "Model '{Model}' instance {Instance} warmed up in {ElapsedMs:F1} ms")]
    public static partial void InstanceWarmedUp(ILogger logger, string model, string instance, double elapsedMs);

    [LoggerMessage(2001, LogLevel.Warning, "Model '{Model}': {Count} request(s) refused in the last interval ({Reason})")]
    public static partial void RequestsRefused(ILogger logger, string model, long count, string reason);

    [LoggerMessage(2002, LogLevel.Error, "Model '{Model}': batch of {Rows} row(s) failed on instance {Instance}")]
    public static partial void BatchFailed(ILogger logger, string model, int rows, string instance, Exception exception);

    [LoggerMessage(2003, LogLevel.Information, "Model '{Model}': draining {Pending} queued and running request(s)")]
    public static partial void Draining(ILogger logger, string model, int pending);

    [LoggerMessage(2004, LogLevel.Warning, "InferKit: the drain timeout ({Timeout}) passed with requests still running")]
    public static partial void DrainTimedOut(ILogger logger, TimeSpan timeout);

    [LoggerMessage(2005, LogLevel.Warning, "Model '{Model}' version '{Version}': the outputs of a joined batch could not be split back into its requests because the model's axis 0 is not a batch axis. From now on this version runs one request per run instead of joining requests (no request fails for it). Set ModelOptions.AxisZeroIsBatch = false for this model to run it so from the start")]
    public static partial void JoiningStopped(ILogger logger, string model, string version, Exception exception);

    [LoggerMessage(1006, LogLevel.Debug, "InferKit: model loading at start finished with failures")]
    public static partial void LoadFinishedWithFailures(ILogger logger, Exception exception);

    [LoggerMessage(1007, LogLevel.Warning, "Model '{Model}': disposing {What} threw; disposal went on with the rest")]
    public static partial void DisposeFailed(ILogger logger, string model, string what, Exception exception);

    [LoggerMessage(1008, LogLevel.Warning, "InferKit: the host's stop was cancelled while models were still loading; stopped without waiting for them")]
    public static partial void StopDidNotWaitForLoading(ILogger logger);

    [LoggerMessage(1009, LogLevel.Warning, "Model '{Model}' version '{Version}': {What} was not disposed within the drain timeout ({Timeout}) because {Reason}; the unload went on and it is disposed in the background")]
    public static partial void DisposalPending(ILogger logger, string model, string version, string what, TimeSpan timeout, string reason);

    [LoggerMessage(1010, LogLevel.Warning, "InferKit: the host's stop was cancelled (its shutdown timeout passed) while accepted requests were still running; the drain gave up waiting for them, and the models are unloaded when the host is disposed")]
    public static partial void StopCancelledWhileDraining(ILogger logger);

    [LoggerMessage(3001, LogLevel.Warning, "Model '{Model}' instance {Instance} taken out of rotation until {Until:O} after {Failures} consecutive failure(s)")]
    public static partial void InstanceTakenOut(ILogger logger, string model, string instance, DateTimeOffset until, int failures);

    [LoggerMessage(3002, LogLevel.Information, "Model '{Model}' instance {Instance} is back in rotation")]
    public static partial void InstanceRestored(ILogger logger, string model, string instance);

    [LoggerMessage(3004, LogLevel.Warning, "Model '{Model}' instance {Instance} taken out of rotation until {Until:O}: a run has been running for {Running}, more than twice Health.RunTimeout ({RunTimeout}), and has not returned")]
    public static partial void InstanceStuck(ILogger logger, string model, string instance, DateTimeOffset until, TimeSpan running, TimeSpan runTimeout);

    [LoggerMessage(3003, LogLevel.Error, "Model '{Model}': load-balancing strategy '{Strategy}' failed to choose an instance ({Failures} failure(s) so far); the least-loaded instance with room was used instead")]
    public static partial void StrategyFailed(ILogger logger, string model, string strategy, long failures, Exception exception);

    [LoggerMessage(4001, LogLevel.Warning, "Alert '{Rule}' is firing for model '{Model}' version '{Version}': {Metric} = {Value:G4}, above {Threshold:G4}")]
    public static partial void AlertFiring(ILogger logger, string rule, string model, string version, AlertMetric metric, double value, double threshold);

    [LoggerMessage(4002, LogLevel.Information, "Alert '{Rule}' resolved for model '{Model}' version '{Version}': {Metric} = {Value:G4}, below {Threshold:G4}")]
    public static partial void AlertResolved(ILogger logger, string rule, string model, string version, AlertMetric metric, double value, double threshold);

    [LoggerMessage(4003, LogLevel.Warning, "An alert subscriber threw while handling alert '{Rule}'")]
    public static partial void AlertObserverFailed(ILogger logger, string rule, Exception exception);

    [LoggerMessage(4004, LogLevel.Warning, "{Count} alert subscriber(s) did not return from OnCompleted within {Timeout}; disposal went on without them")]
    public static partial void AlertObserversDidNotComplete(ILogger logger, int count, TimeSpan timeout);

    [LoggerMessage(5001, LogLevel.Warning, "Audit sink {Sink}: {Count} record(s) dropped in the last interval because its buffer was full")]
    public static partial void AuditRecordsDropped(ILogger logger, string sink, long count);

    [LoggerMessage(5002, LogLevel.Warning, "Audit sink {Sink} failed to write {Count} record(s) since the last report")]
    public static partial void AuditSinkFailed(ILogger logger, string sink, long count, Exception exception);

    [LoggerMessage(5003, LogLevel.Warning, "Audit sink {Sink}: the callbacks it registered on its cancellation token did not return within {Timeout}; disposal went on without them")]
    public static partial void AuditSinkStopTimedOut(ILogger logger, string sink, TimeSpan timeout);
}
