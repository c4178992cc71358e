using InferKit.Telemetry;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Telemetry;

/// <summary>Alert observers are user code: one that blocks must not hold up disposal or the alerts gauge.</summary>
public sealed class AlertMonitorRobustnessTests
{
    [Fact]
    public async Task Disposing_the_alert_monitor_does_not_wait_for_an_observer_that_blocks()
    {
        var time = new FakeTimeProvider();
        var options = new InferKitTelemetryOptions();
        var rule = AlertRule.ErrorRateAbove("errors", fireAbove: 0.5);
        rule.FireAfter = 1;
        rule.MinimumRequests = 1;
        options.Alerts.Rules.Add(rule);
        var metrics = new InferKitMetrics(null, time, null, options, null);
        metrics.ForModel("m", "1").Window!.Record(InferenceOutcome.Error, 0.01);

        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        metrics.Alerts.Subscribe(new BlockingObserver(entered, release));
        var evaluation = Task.Run(metrics.Alerts.Evaluate);
        try
        {
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));
            var dispose = Task.Run(metrics.Alerts.Dispose);
            var observe = Task.Run(() => metrics.Alerts.Observe().ToList());
            Assert.Same(dispose, await Task.WhenAny(dispose, Task.Delay(TimeSpan.FromSeconds(30))));
            Assert.Same(observe, await Task.WhenAny(observe, Task.Delay(TimeSpan.FromSeconds(30))));
        }
        finally
        {
            release.Set();
            await evaluation;
            metrics.Dispose();
        }
    }

    private sealed class BlockingObserver(ManualResetEventSlim entered, ManualResetEventSlim release) : IObserver<AlertEvent>
    {
        public void OnCompleted()
        {
        }

        public void OnError(Exception error)
        {
        }

        public void OnNext(AlertEvent value)
        {
            entered.Set();
            release.Wait();
        }
    }
}
