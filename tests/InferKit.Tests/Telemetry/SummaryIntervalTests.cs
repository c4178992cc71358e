using InferKit.Telemetry;

namespace InferKit.Tests.Telemetry;

public sealed class SummaryIntervalTests
{
    [Fact]
    public void Counting_a_refusal_does_not_throw_with_a_log_summary_interval_longer_than_a_timer_can_wait()
    {
        var options = new InferKitTelemetryOptions { LogSummaryInterval = TimeSpan.MaxValue }; // passes validation (positive)
        using var metrics = new InferKitMetrics(null, TimeProvider.System, null, options, null);

        // On the request path: a refusal arms the summary timer.
        metrics.ForModel("m", "1").CountRefusal(RefusalReason.QueueFull);
    }
}
