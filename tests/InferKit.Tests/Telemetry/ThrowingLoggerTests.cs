using System.Collections.Concurrent;
using InferKit.LoadBalancing;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Telemetry;

/// <summary>
/// A logging provider is user code, and InferKit logs from timers, pool work items, background loops, batch completion,
/// loading and disposal. A provider that throws must not crash the process, fail or lose a request, stop a background
/// loop or cut a load or disposal short. The harness's fake provider shows the other providers still get every line.
/// </summary>
public sealed class ThrowingLoggerTests
{
    private static Action<IServiceCollection> With(ThrowingLoggerProvider provider, LogLevel minimum = LogLevel.Information)
        => s => s.AddLogging(b => b.AddProvider(provider).SetMinimumLevel(minimum));

    /// <summary>A harness whose models load while the provider behaves; it throws from then on.</summary>
    private static async Task<TelemetryHarness> LoadedAsync(ThrowingLoggerProvider provider, Action<ModelOptions>? configure = null, int instances = 1,
        Action<IInferKitBuilder>? inferKit = null)
    {
        provider.Throwing = false;
        var h = TelemetryHarness.Create(configure, instances, inferKit: inferKit, services: With(provider));
        await h.LoadAsync();
        provider.Throwing = true;
        return h;
    }

    private static int Logged(TelemetryHarness h, int eventId) => h.Logs.Collector.GetSnapshot().Count(r => r.Id.Id == eventId);

    [Fact]
    public async Task A_model_loads_and_serves_when_every_log_line_throws()
    {
        var provider = new ThrowingLoggerProvider();
        await using var h = TelemetryHarness.Create(services: With(provider));
        using var quiet = provider.QuietAtEnd();

        await h.LoadAsync();

        Assert.Equal(ModelState.Ready, h.Registry.GetModel(h.Model).State);
        Assert.False(h.Backend.Disposed);
        using var r = await h.Send(1);
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal(1, Logged(h, 1001));
        Assert.True(provider.Thrown > 0);
    }

    [Fact]
    public async Task The_refusal_summary_timer_survives_a_logger_that_throws_and_keeps_summarizing()
    {
        var provider = new ThrowingLoggerProvider();
        await using var h = await LoadedAsync(provider, o => o.Batching.MaxQueueLength = 1);
        using var quiet = provider.QuietAtEnd();
        var first = await h.OccupyAsync(1);
        var queued = h.Send(2).AsTask();
        (await h.Send(10)).Dispose(); // refused: the queue is full

        h.Time.Advance(TimeSpan.FromSeconds(10)); // the summary timer's callback logs
        Assert.Equal(1, Logged(h, 2001));

        (await h.Send(11)).Dispose();
        h.Time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(2, Logged(h, 2001));

        h.Backend.Release();
        (await first).EnsureSuccess().Dispose();
        (await queued).EnsureSuccess().Dispose();
    }

    [Fact]
    public async Task Alerts_still_reach_observers_when_logging_them_throws()
    {
        var provider = new ThrowingLoggerProvider();
        var rule = AlertRule.ErrorRateAbove("errors", fireAbove: 0.5);
        rule.FireAfter = 1;
        rule.ClearAfter = 1;
        rule.MinimumRequests = 1;
        await using var h = await LoadedAsync(provider, o =>
        {
            o.Health.FailureThreshold = 1000;
            o.Health.RetryOnAnotherInstance = false;
        }, inferKit: b => b.AddAlertRules(o =>
        {
            o.EvaluationInterval = TimeSpan.FromSeconds(10);
            o.Window = TimeSpan.FromSeconds(10);
            o.Rules.Add(rule);
        }));
        using var quiet = provider.QuietAtEnd();
        var events = new ConcurrentQueue<AlertEvent>();
        using var subscription = h.Alerts.Subscribe(new Observer(events));

        h.Backend.Failure = () => new InvalidOperationException("backend boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        h.Time.Advance(TimeSpan.FromSeconds(10)); // evaluation on the timer: fires, logs, raises
        Assert.Equal(AlertState.Firing, Assert.Single(events).State);

        // Delivery goes on after a failed log line: the next event is raised too.
        h.Time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal([AlertState.Firing, AlertState.Resolved], events.Select(e => e.State));
        Assert.Equal(1, Logged(h, 4001));
        Assert.Equal(1, Logged(h, 4002));
    }

    [Fact]
    public async Task A_batch_that_succeeds_is_answered_success_when_logging_the_instance_back_in_rotation_throws()
    {
        var provider = new ThrowingLoggerProvider();
        await using var h = await LoadedAsync(provider, o =>
        {
            o.Health.FailureThreshold = 1;
            o.Health.BackOff = TimeSpan.FromSeconds(5);
            o.Health.RetryOnAnotherInstance = false;
        });
        using var quiet = provider.QuietAtEnd();

        h.Backend.Failure = () => new InvalidOperationException("backend boom");
        var failed = await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        Assert.Equal("backend boom", failed.InnerException?.Message); // the backend's error, not the logger's
        h.Backend.Failure = null;

        h.Time.Advance(TimeSpan.FromSeconds(5));
        using var r = await h.Send(2);
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal(1, Logged(h, 3001));
        Assert.Equal(1, Logged(h, 3002));
    }

    [Fact]
    public async Task A_failed_batch_is_still_retried_on_another_instance_when_logging_the_failure_throws()
    {
        var provider = new ThrowingLoggerProvider();
        await using var h = await LoadedAsync(provider, o =>
        {
            o.LoadBalancing = LoadBalancingStrategies.RoundRobin;
            o.Health.FailureThreshold = 1000;
        }, instances: 2);
        using var quiet = provider.QuietAtEnd();
        h.Backends[0].Failure = () => new InvalidOperationException("instance 0 boom");

        for (int i = 1; i <= 4; i++)
        {
            using var r = await h.Send(i);
            Assert.True(r.IsSuccess, r.Message);
        }

        Assert.True(h.Backends[0].Runs > 0);
        Assert.Equal(h.Backends[0].Runs, Logged(h, 2002));
    }

    [Fact]
    public async Task Draining_waits_for_running_requests_when_logging_the_drain_throws()
    {
        var provider = new ThrowingLoggerProvider();
        await using var h = await LoadedAsync(provider);
        using var quiet = provider.QuietAtEnd();
        var running = await h.OccupyAsync(1);

        var draining = h.Registry.DrainAsync(TimeSpan.FromSeconds(30));
        h.Backend.Release();

        Assert.True(await draining.WaitAsync(TimeSpan.FromSeconds(30)));
        (await running).EnsureSuccess().Dispose();
        Assert.Equal(1, Logged(h, 2003));
    }

    [Fact]
    public async Task Disposal_unloads_every_model_when_logging_an_unload_throws()
    {
        var provider = new ThrowingLoggerProvider();
        var other = new FakeBackend("other");
        var h = await LoadedAsync(provider, inferKit: b => b.AddModel("m2", _ => other));

        await h.DisposeAsync();

        Assert.True(h.Backend.Disposed);
        Assert.True(other.Disposed);
        Assert.Equal(2, Logged(h, 1003));
    }

    [Fact]
    public async Task Stopping_the_host_does_not_throw_when_logging_a_failed_load_throws()
    {
        var provider = new ThrowingLoggerProvider();
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(new FakeTimeProvider());
        With(provider, LogLevel.Debug)(services);
        services.AddInferKit().AddModel("m", _ => throw new InvalidOperationException("factory boom"));
        await using var provider2 = services.BuildServiceProvider();
        var hosted = provider2.GetServices<IHostedService>().Single();

        await hosted.StartAsync(CancellationToken.None);
        await hosted.StopAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(ModelState.Failed, provider2.GetRequiredService<IModelRegistry>().GetModel("m").State);
    }

    [Fact]
    public async Task An_audit_sink_keeps_receiving_records_after_logging_its_failure_throws()
    {
        var provider = new ThrowingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(provider));
        var sink = new FailingOnceSink();
        var metrics = new InferKitMetrics(null, new FakeTimeProvider(), factory, new InferKitTelemetryOptions(), [sink]);
        try
        {
            metrics.Audit(Record("r1"), InferKitMetrics.ModelTags("m", "1")); // the sink throws; logging that throws too
            metrics.Audit(Record("r2"), InferKitMetrics.ModelTags("m", "1"));

            Assert.Equal("r2", await sink.Written.Task.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.True(provider.Thrown > 0);
        }
        finally
        {
            await metrics.DisposeAsync();
        }
    }

    private static InferenceAuditRecord Record(string id) => new(id, "m", "1", InferenceOutcome.Success, RefusalReason.None, null,
        TimeSpan.Zero, DateTimeOffset.UnixEpoch, null, 0, null, [], []);

    private sealed class FailingOnceSink : IInferenceAuditSink
    {
        private int _calls;

        /// <summary>The id of the first record written successfully.</summary>
        public TaskCompletionSource<string?> Written { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _calls) == 1)
            {
                throw new InvalidOperationException("sink boom");
            }

            Written.TrySetResult(record.RequestId);
            return ValueTask.CompletedTask;
        }
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
}
