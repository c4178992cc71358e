using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Telemetry;

/// <summary>Alert observers are user code: one that blocks must not hold up disposal or the alerts gauge.</summary>
public sealed class AlertMonitorRobustnessTests
{
    [Fact]
    public async Task Disposing_the_alert_monitor_does_not_wait_for_an_observer_that_blocks()
    {
        var metrics = WithAnErrorThatFiresOnEvaluation();

        using var entered = new ManualResetEventSlim();
        var release = new Gate("the observer's OnNext");
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
            release.Open();
            await evaluation;
            metrics.Dispose();
        }
    }

    [Fact]
    public async Task Disposing_the_alert_monitor_waits_a_bounded_time_for_an_observer_whose_OnCompleted_blocks_then_goes_on()
    {
        var time = new FakeTimeProvider();
        var options = new InferKitTelemetryOptions();
        options.Alerts.Rules.Add(AlertRule.QueueLengthAbove("queue", 10));
        var logs = new FakeLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        var metrics = new InferKitMetrics(null, time, factory, options, null);

        using var entered = new ManualResetEventSlim();
        var release = new Gate("the observer's OnCompleted");
        var quick = new CompletionObserver();
        metrics.Alerts.Subscribe(new BlockingCompletionObserver(entered, release));
        metrics.Alerts.Subscribe(quick);
        var dispose = Task.Run(metrics.Alerts.Dispose);
        try
        {
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));
            await quick.Completed.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the other observers are completed meanwhile

            // The wait is bounded on the injected clock: once it passes, disposal goes on (and says so in the log).
            time.Advance(AlertMonitor.CompletionTimeout);
            Assert.Same(dispose, await Task.WhenAny(dispose, Task.Delay(TimeSpan.FromSeconds(30))));
            var warning = Assert.Single(logs.Collector.GetSnapshot(), r => r.Id.Id == 4004);
            Assert.Equal(LogLevel.Warning, warning.Level);
            Assert.Contains("1 alert subscriber(s)", warning.Message, StringComparison.Ordinal);
        }
        finally
        {
            release.Open();
            await dispose;
            metrics.Dispose();
        }
    }

    [Fact]
    public async Task An_observer_completed_by_disposal_while_the_monitor_delivers_gets_no_event_after_OnCompleted_nor_OnCompleted_during_OnNext()
    {
        var metrics = WithAnErrorThatFiresOnEvaluation();

        // The first observer holds the delivery inside its OnNext; the second has not had the event yet.
        using var entered = new ManualResetEventSlim();
        var release = new Gate("the observer's OnNext");
        var slow = new CallRecorder(entered, release);
        var next = new CallRecorder(null, null);
        metrics.Alerts.Subscribe(slow);
        metrics.Alerts.Subscribe(next);
        var evaluation = Task.Run(metrics.Alerts.Evaluate);
        try
        {
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)));

            // Disposal completes the observer that is not in OnNext, and does not wait for the one that is.
            await Task.Run(metrics.Alerts.Dispose).WaitAsync(TimeSpan.FromSeconds(30));
            await next.Completed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            // The delivery goes on: the rest of the observers were read before disposal emptied the list.
            release.Open();
            await evaluation.WaitAsync(TimeSpan.FromSeconds(30));
            metrics.Dispose();
        }

        Assert.Equal(["OnCompleted"], next.Calls); // no OnNext after OnCompleted
        Assert.Equal(["OnNext:errors", "OnNext returned", "OnCompleted"], slow.Calls); // OnCompleted once OnNext returned, not during it
    }

    /// <summary>Records its calls in order; OnNext can wait at a gate.</summary>
    [Fact]
    public void An_observer_that_subscribes_after_disposal_is_completed_at_once_and_gets_no_event()
    {
        var metrics = WithAnErrorThatFiresOnEvaluation();
        metrics.Alerts.Dispose();
        var late = new CallRecorder(null, null);

        using (metrics.Alerts.Subscribe(late))
        {
            metrics.Alerts.Evaluate();
        }

        Assert.Equal(["OnCompleted"], late.Calls);
        metrics.Dispose();
    }

    /// <summary>Metrics whose one alert rule fires at the next evaluation: an error rate rule over a window that holds one error.</summary>
    private static InferKitMetrics WithAnErrorThatFiresOnEvaluation()
    {
        var options = new InferKitTelemetryOptions();
        var rule = AlertRule.ErrorRateAbove("errors", fireAbove: 0.5);
        rule.FireAfter = 1;
        rule.MinimumRequests = 1;
        options.Alerts.Rules.Add(rule);
        var metrics = new InferKitMetrics(null, new FakeTimeProvider(), null, options, null);
        metrics.ForModel("m", "1").Window!.Record(InferenceOutcome.Error, 0.01);
        return metrics;
    }

    private sealed class CallRecorder(ManualResetEventSlim? entered, Gate? release) : IObserver<AlertEvent>
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _calls = new();

        public string[] Calls => [.. _calls];

        public TaskCompletionSource Completed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void OnCompleted()
        {
            _calls.Enqueue("OnCompleted");
            Completed.TrySetResult();
        }

        public void OnError(Exception error) => _calls.Enqueue("OnError");

        public void OnNext(AlertEvent value)
        {
            _calls.Enqueue("OnNext:" + value.Rule);
            entered?.Set();
            release?.Wait();
            _calls.Enqueue("OnNext returned");
        }
    }

    private sealed class BlockingCompletionObserver(ManualResetEventSlim entered, Gate release) : IObserver<AlertEvent>
    {
        public void OnCompleted()
        {
            entered.Set();
            release.Wait();
        }

        public void OnError(Exception error)
        {
        }

        public void OnNext(AlertEvent value)
        {
        }
    }

    private sealed class CompletionObserver : IObserver<AlertEvent>
    {
        public TaskCompletionSource Completed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void OnCompleted() => Completed.TrySetResult();

        public void OnError(Exception error)
        {
        }

        public void OnNext(AlertEvent value)
        {
        }
    }

    private sealed class BlockingObserver(ManualResetEventSlim entered, Gate release) : IObserver<AlertEvent>
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
