using System.Collections.Concurrent;
using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace InferKit.Tests.Telemetry;

public sealed class AlertTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    /// <summary>A harness with alert rules and health checks; the telemetry hub (and the evaluation timer) starts at <see cref="Start"/>.</summary>
    private sealed class AlertHarness : IAsyncDisposable
    {
        private DateTimeOffset _next;

        public AlertHarness(TimeSpan window, Action<ModelOptions>? configure, Func<int, TimeSpan>? computeTime, params AlertRule[] rules)
        {
            H = TelemetryHarness.Create(o =>
            {
                o.Health.RetryOnAnotherInstance = false;
                o.Health.FailureThreshold = 1000;
                configure?.Invoke(o);
            }, computeTime: computeTime, services: s => s.AddHealthChecks().AddInferKitHealthChecks(), inferKit: b => b.AddAlertRules(o =>
            {
                o.EvaluationInterval = Interval;
                o.Window = window;
                foreach (var r in rules)
                {
                    o.Rules.Add(r);
                }
            }));
        }

        public TelemetryHarness H { get; }

        public ConcurrentQueue<AlertEvent> Events { get; } = new();

        public async Task Start()
        {
            _next = H.Time.GetUtcNow() + Interval;
            H.Alerts.Subscribe(new Observer(Events));
            await H.LoadAsync();
        }

        /// <summary>Moves the fake clock to the next evaluation (which runs inside Advance).</summary>
        public void Evaluate()
        {
            H.Time.Advance(_next - H.Time.GetUtcNow());
            _next += Interval;
        }

        public async Task<HealthReportEntry> HealthAsync()
        {
            var report = await H.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
            return report.Entries[InferKitModelHealthCheckExtensions.DefaultName];
        }

        public ValueTask DisposeAsync() => H.DisposeAsync();
    }

    private sealed class Observer(ConcurrentQueue<AlertEvent> events) : IObserver<AlertEvent>
    {
        public void OnCompleted()
        {
        }

        public void OnError(Exception error)
        {
        }

        public void OnNext(AlertEvent value) => events.Enqueue(value);
    }

    [Fact]
    public async Task An_error_rate_alert_fires_after_two_evaluations_above_marks_health_degraded_and_clears_after_two_below()
    {
        var rule = AlertRule.ErrorRateAbove("errors", fireAbove: 0.5, clearBelow: 0.1);
        rule.FireAfter = 2;
        rule.ClearAfter = 2;
        rule.MinimumRequests = 4;
        await using var a = new AlertHarness(TimeSpan.FromSeconds(30), null, null, rule);
        await a.Start();
        var h = a.H;

        h.Backend.Failure = () => new InvalidOperationException("boom");
        for (int i = 1; i <= 4; i++)
        {
            await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(i));
        }

        h.Backend.Failure = null;

        a.Evaluate(); // 4 of 4 failed: above once
        Assert.Empty(a.Events);
        Assert.Empty(h.Alerts.Firing);
        Assert.Equal(HealthStatus.Healthy, (await a.HealthAsync()).Status);

        a.Evaluate(); // above twice: fires
        var fired = Assert.Single(a.Events);
        Assert.Equal(("errors", "m", "1", AlertState.Firing, AlertMetric.ErrorRate, 1.0, 0.5),
            (fired.Rule, fired.Model, fired.Version, fired.State, fired.Metric, fired.Value, fired.Threshold));
        Assert.Same(fired, Assert.Single(h.Alerts.Firing));
        Assert.True(h.Alerts.IsFiring("m"));
        var health = await a.HealthAsync();
        Assert.Equal(HealthStatus.Degraded, health.Status);
        var data = (IReadOnlyDictionary<string, object>)health.Data["m"];
        Assert.Equal(["errors"], (string[])data["alertsFiring"]);
        Assert.Contains(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 4001 && r.Message.Contains("errors", StringComparison.Ordinal));

        for (int i = 0; i < 40; i++)
        {
            (await h.Send(100 + i)).Dispose();
        }

        a.Evaluate(); // 4 errors in 44 (0.09): below the clear threshold once; still firing
        Assert.Single(a.Events);
        Assert.True(h.Alerts.IsFiring("m"));

        a.Evaluate(); // the failures left the window: 0 of 40, below twice: resolved
        Assert.Equal(2, a.Events.Count);
        var resolved = a.Events.Last();
        Assert.Equal((AlertState.Resolved, 0.0, 0.1), (resolved.State, resolved.Value, resolved.Threshold));
        Assert.Empty(h.Alerts.Firing);
        Assert.False(h.Alerts.IsFiring("m"));
        Assert.Equal(HealthStatus.Healthy, (await a.HealthAsync()).Status);
        Assert.Contains(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 4002);
    }

    [Fact]
    public async Task A_queue_length_alert_needs_consecutive_evaluations_above_and_does_not_flap_between_the_two_thresholds()
    {
        var rule = AlertRule.QueueLengthAbove("backlog", fireAbove: 4, clearBelow: 2);
        rule.FireAfter = 2;
        rule.ClearAfter = 2;
        await using var a = new AlertHarness(Interval, null, null, rule);
        await a.Start();
        var h = a.H;
        var first = await h.OccupyAsync(1);
        var live = new List<(CancellationTokenSource Cts, Task<InferenceResponse> Task)>();
        int next = 10;
        void Queue(int n)
        {
            for (int i = 0; i < n; i++)
            {
                var cts = new CancellationTokenSource();
                live.Add((cts, h.Client.InferAsync("m", Fakes.FakeBackend.Request(next++), cts.Token).AsTask()));
            }
        }

        async Task Cancel(int n)
        {
            foreach (var (cts, task) in live.Take(n).ToList())
            {
                await cts.CancelAsync();
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);
                cts.Dispose();
                live.RemoveAt(0);
            }
        }

        Queue(5);
        a.Evaluate();  // 5 > 4: above once
        await Cancel(2);
        a.Evaluate();  // 3: not above; the count starts over
        Queue(2);
        a.Evaluate();  // 5: above once
        Assert.Empty(a.Events);
        a.Evaluate();  // above twice: fires
        Assert.Equal(AlertState.Firing, Assert.Single(a.Events).State);
        Assert.Equal(5.0, a.Events.Single().Value);

        await Cancel(2);
        for (int i = 0; i < 3; i++)
        {
            a.Evaluate(); // 3: between the thresholds, neither above nor below: keeps firing
        }

        Assert.Single(a.Events);
        await Cancel(2);
        a.Evaluate(); // 1 < 2: below once
        Assert.Single(a.Events);
        a.Evaluate(); // below twice: resolved
        Assert.Equal([AlertState.Firing, AlertState.Resolved], a.Events.Select(e => e.State));
        Assert.Equal(1.0, a.Events.Last().Value);

        h.Backend.Release();
        (await first).Dispose();
        foreach (var (cts, task) in live)
        {
            (await task).Dispose();
            cts.Dispose();
        }
    }

    [Fact]
    public async Task A_p99_latency_alert_fires_on_slow_batches_and_clears_on_fast_ones()
    {
        int ms = 200;
        var rule = AlertRule.P99LatencyAbove("slow", TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(50));
        rule.FireAfter = 1;
        rule.ClearAfter = 1;
        rule.MinimumRequests = 5;
        await using var a = new AlertHarness(Interval, null, _ => TimeSpan.FromMilliseconds(ms), rule);
        await a.Start();
        var h = a.H;

        for (int i = 0; i < 4; i++)
        {
            (await h.Send(i + 1)).Dispose();
        }

        a.Evaluate(); // 4 requests: fewer than MinimumRequests, not judged
        Assert.Empty(a.Events);

        for (int i = 0; i < 5; i++)
        {
            (await h.Send(i + 1)).Dispose();
        }

        a.Evaluate();
        var fired = Assert.Single(a.Events);
        Assert.Equal((AlertState.Firing, AlertMetric.P99Latency, 0.2), (fired.State, fired.Metric, fired.Value));

        ms = 10;
        for (int i = 0; i < 5; i++)
        {
            (await h.Send(i + 1)).Dispose();
        }

        a.Evaluate();
        var resolved = a.Events.Last();
        Assert.Equal((AlertState.Resolved, 0.01), (resolved.State, resolved.Value));
    }

    /// <summary>
    /// A rule that fires on any backlog (above 0, so clearing at 0) resolves once the queue is empty: the metric cannot go
    /// below 0, so a firing rule whose clear threshold is 0 must count a value of 0 towards clearing, or it fires for ever.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_rule_firing_above_zero_resolves_when_the_metric_is_back_at_zero(bool explicitClear)
    {
        var rule = explicitClear ? AlertRule.QueueLengthAbove("backlog", fireAbove: 0, clearBelow: 0) : AlertRule.QueueLengthAbove("backlog", fireAbove: 0);
        rule.FireAfter = 1;
        rule.ClearAfter = 1;
        await using var a = new AlertHarness(Interval, null, null, rule);
        await a.Start();
        var first = await a.H.OccupyAsync(1);
        var queued = a.H.Send(2).AsTask();
        a.Evaluate();
        Assert.Equal(AlertState.Firing, Assert.Single(a.Events).State);

        a.H.Backend.Release();
        (await first).Dispose();
        (await queued).Dispose();
        a.Evaluate();
        Assert.Equal(2, a.Events.Count);
        var resolved = a.Events.Last();
        Assert.Equal((AlertState.Resolved, 0.0), (resolved.State, resolved.Value));
        Assert.Empty(a.H.Alerts.Firing);
    }

    [Fact]
    public async Task An_evaluation_that_meets_a_metrics_collection_holding_the_monitor_waits_for_it_instead_of_being_skipped()
    {
        var rule = AlertRule.QueueLengthAbove("backlog", fireAbove: 0, clearBelow: 0);
        rule.FireAfter = 1;
        await using var a = new AlertHarness(Interval, null, null, rule);
        await a.Start();
        var first = await a.H.OccupyAsync(1);
        var queued = a.H.Send(2).AsTask();
        var monitor = (AlertMonitor)a.H.Alerts;
        var gate = (Lock)typeof(AlertMonitor).GetField("_gate", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(monitor)!;
        var evaluator = new Thread(monitor.Evaluate) { IsBackground = true };
        lock (gate) // as a metrics collection reading inferkit.alerts.active holds it
        {
            evaluator.Start();
            Assert.True(SpinWait.SpinUntil(() => !evaluator.IsAlive || (evaluator.ThreadState & ThreadState.WaitSleepJoin) != 0, TimeSpan.FromSeconds(30)));
        }

        Assert.True(evaluator.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(AlertState.Firing, Assert.Single(a.Events).State); // evaluated once the collection let go, not skipped

        a.H.Backend.Release();
        (await first).Dispose();
        (await queued).Dispose();
    }

    [Fact]
    public async Task The_active_alerts_gauge_reports_one_series_per_rule_and_model()
    {
        var rule = AlertRule.QueueLengthAbove("backlog", fireAbove: 0, clearBelow: 0);
        rule.FireAfter = 1;
        await using var a = new AlertHarness(Interval, null, null, rule);
        using var gauge = a.H.Collect<int>(InferKitTelemetry.Instruments.AlertsActive);
        await a.Start();
        var first = await a.H.OccupyAsync(1);
        var queued = a.H.Send(2).AsTask();
        a.Evaluate();
        gauge.RecordObservableInstruments();
        var m = Assert.Single(gauge.GetMeasurementSnapshot());
        Assert.Equal(1, m.Value);
        Assert.Equal("backlog", m.Tags[InferKitTelemetry.RuleTag]);
        Assert.Equal("m", m.Tags[InferKitTelemetry.ModelTag]);
        a.H.Backend.Release();
        (await first).Dispose();
        (await queued).Dispose();
    }

    [Fact]
    public void Invalid_rules_are_reported_together_with_what_was_expected()
    {
        var options = new InferKitTelemetryOptions();
        options.Alerts.EvaluationInterval = TimeSpan.FromSeconds(10);
        options.Alerts.Window = TimeSpan.FromSeconds(5);
        options.Alerts.Rules.Add(AlertRule.ErrorRateAbove("dup", 2));
        options.Alerts.Rules.Add(AlertRule.QueueLengthAbove("dup", 10, clearBelow: 20));
        options.Alerts.Rules.Add(new AlertRule { Metric = AlertMetric.P99Latency, Threshold = 1, FireAfter = 0 });
        options.Audit.SamplingRate = 1.5;

        var result = new InferKitTelemetryOptionsValidator().Validate(null, options);
        Assert.True(result.Failed);
        var message = result.FailureMessage;
        Assert.Contains("Window (00:00:05) must be at least the evaluation interval (00:00:10)", message, StringComparison.Ordinal);
        Assert.Contains("Alert rule 'dup': a rate Threshold is a share between 0 and 1 (it is 2)", message, StringComparison.Ordinal);
        Assert.Contains("Alert rule 'dup': another rule has the same name", message, StringComparison.Ordinal);
        Assert.Contains("Alert rule 'dup': ClearThreshold must be between 0 and Threshold (10); it is 20", message, StringComparison.Ordinal);
        Assert.Contains("AlertingOptions.Rules[2]: Name is required", message, StringComparison.Ordinal);
        Assert.Contains("AlertingOptions.Rules[2]: FireAfter and ClearAfter must be at least 1", message, StringComparison.Ordinal);
        Assert.Contains("AuditOptions.SamplingRate must be between 0 and 1 (it is 1.5)", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Invalid_rules_fail_when_the_client_is_resolved_without_a_host()
    {
        await using var h = TelemetryHarness.Create(inferKit: b => b.AddAlertRules(o => o.Rules.Add(new AlertRule { Name = "x", Threshold = -1 })));
        var ex = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => h.Client);
        Assert.Contains("Alert rule 'x': Threshold must be a finite number, zero or more", ex.Message, StringComparison.Ordinal);
    }
}
