using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Telemetry;

/// <summary>An audit sink is user code: what it hangs on the shutdown token must not make disposal throw.</summary>
public sealed class AuditDisposalTests
{
    private static InferenceAuditRecord Record() => new("r1", "m", "1", InferenceOutcome.Success, RefusalReason.None, null,
        TimeSpan.Zero, DateTimeOffset.UnixEpoch, null, 0, null, [], []);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Disposal_does_not_throw_when_a_sinks_cancellation_callback_throws(bool async)
    {
        var options = new InferKitTelemetryOptions();
        options.Audit.FlushTimeout = TimeSpan.Zero;
        var sink = new ThrowOnCancelSink();
        var metrics = new InferKitMetrics(null, new FakeTimeProvider(), null, options, [sink]);
        metrics.Audit(Record(), InferKitMetrics.ModelTags("m", "1"));
        await sink.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        if (async)
        {
            await metrics.DisposeAsync();
        }
        else
        {
            metrics.Dispose();
        }
    }

    [Fact]
    public async Task DisposeAsync_does_not_throw_with_a_flush_timeout_longer_than_a_timer_can_wait()
    {
        var options = new InferKitTelemetryOptions();
        options.Audit.FlushTimeout = TimeSpan.MaxValue; // passes validation (zero or positive): "wait as long as it takes"
        var sink = new ThrowOnCancelSink();
        var metrics = new InferKitMetrics(null, new FakeTimeProvider(), null, options, [sink]);

        await metrics.DisposeAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Disposal_waits_a_bounded_time_for_a_sinks_cancellation_callback_that_blocks(bool async)
    {
        var time = new FakeTimeProvider();
        var options = new InferKitTelemetryOptions();
        options.Audit.FlushTimeout = TimeSpan.Zero;
        var release = new Gate("the sink's cancellation callback");
        var sink = new BlockOnCancelSink(release);
        var metrics = new InferKitMetrics(null, time, null, options, [sink]);
        metrics.Audit(Record(), InferKitMetrics.ModelTags("m", "1"));
        await sink.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var dispose = Task.Run(async () =>
        {
            if (async)
            {
                await metrics.DisposeAsync();
            }
            else
            {
                metrics.Dispose();
            }
        });
        try
        {
            await sink.CallbackEntered.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // The wait is bounded on the injected clock: once it passes, disposal goes on without the callback.
            time.Advance(AuditPipeline.CancelTimeout);
            Assert.Same(dispose, await Task.WhenAny(dispose, Task.Delay(TimeSpan.FromSeconds(30))));
            await dispose;
        }
        finally
        {
            release.Open();
        }
    }

    private sealed class BlockOnCancelSink(Gate release) : IInferenceAuditSink
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource CallbackEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken)
        {
            cancellationToken.Register(() =>
            {
                CallbackEntered.TrySetResult();
                release.Wait(); // an abort that waits for something that never comes
            });
            Entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
    }

    private sealed class ThrowOnCancelSink : IInferenceAuditSink
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask WriteAsync(InferenceAuditRecord record, CancellationToken cancellationToken)
        {
            cancellationToken.Register(static () => throw new InvalidOperationException("abort failed"));
            Entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
    }
}
