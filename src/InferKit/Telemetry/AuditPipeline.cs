using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace InferKit.Telemetry;

/// <summary>
/// One sink's bounded buffer and the background loop that drains it. Writers never wait: when the buffer is full the
/// record is dropped and counted. Sink failures are logged at most once per summary interval, with a count.
/// </summary>
internal sealed class AuditPipeline : IAsyncDisposable, IDisposable
{
    private readonly IInferenceAuditSink _sink;
    private readonly Channel<InferenceAuditRecord> _channel;
    private readonly CancellationTokenSource _stop = new();
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly TimeSpan _logInterval;
    private readonly TimeSpan _flushTimeout;
    private readonly Task _loop;
    private long _dropped;
    private long _written;
    private long _failures;
    private long _failuresLogged;
    private long _lastFailureLog;
    private bool _failureLogged;
    private int _disposed;

    public AuditPipeline(IInferenceAuditSink sink, AuditOptions options, ILogger logger, TimeProvider time, TimeSpan logInterval)
    {
        _sink = sink;
        SinkName = sink.GetType().Name;
        _logger = SafeLogger.Wrap(logger);
        _time = time;
        _logInterval = logInterval;
        _flushTimeout = InferKitMetrics.ClampToTimer(options.FlushTimeout);
        _channel = Channel.CreateBounded<InferenceAuditRecord>(new BoundedChannelOptions(options.BufferCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait, // TryWrite fails instead of waiting: the caller drops and counts
            SingleReader = true,
            SingleWriter = false,
            AllowSynchronousContinuations = false,
        });
        _loop = Task.Run(RunAsync);
    }

    public string SinkName { get; }

    /// <summary>Records dropped because the buffer was full.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Records the sink took (successfully or not).</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>Offers a record without waiting; false (and counted) when the buffer is full or the pipeline is closed.</summary>
    public bool TryWrite(InferenceAuditRecord record)
    {
        if (_channel.Writer.TryWrite(record))
        {
            return true;
        }

        Interlocked.Increment(ref _dropped);
        return false;
    }

    /// <summary>How long disposal waits for the callbacks the sink registered on its cancellation token (user code).</summary>
    internal static readonly TimeSpan CancelTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Closes the buffer and stops the sink at once (what is buffered is lost); see <see cref="CancelSinkAsync"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _channel.Writer.TryComplete();
        CancelSinkAsync().GetAwaiter().GetResult();
    }

    /// <summary>Closes the buffer, lets the sink take what is buffered for at most the flush timeout, then stops it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _channel.Writer.TryComplete();
        try
        {
            await _loop.WaitAsync(_flushTimeout, _time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // The sink did not take the rest in time: stop it; what is left in the buffer is lost.
        }

        await CancelSinkAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Cancels the sink's token. The callbacks it registered there are user code: they run on the thread pool, and this
    /// waits for them at most <see cref="CancelTimeout"/> (on the injected clock). One that throws is logged; when they
    /// do not return in time, that is logged and the token source is disposed once they do.
    /// </summary>
    private async Task CancelSinkAsync()
    {
        Task callbacks = Task.CompletedTask;
        if (!await BoundedWait.CompletesWithinAsync(() => callbacks = _stop.CancelAsync(), CancelTimeout, _time).ConfigureAwait(false))
        {
            Log.AuditSinkStopTimedOut(_logger, SinkName, CancelTimeout);
            _ = callbacks.ContinueWith(static (t, s) => ((AuditPipeline)s!).AfterCallbacks(t), this, CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return;
        }

        AfterCallbacks(callbacks);
    }

    private void AfterCallbacks(Task callbacks)
    {
        if (callbacks.Exception is { } ex)
        {
            // A callback the sink registered on its cancellation token threw: the sink's failure, not the disposal's.
            Log.AuditSinkFailed(_logger, SinkName, 1, ex.InnerExceptions.Count == 1 ? ex.InnerExceptions[0] : ex);
        }

        _stop.Dispose();
    }

    private async Task RunAsync()
    {
        var reader = _channel.Reader;
        var token = _stop.Token;
        try
        {
            while (await reader.WaitToReadAsync(token).ConfigureAwait(false))
            {
                while (reader.TryRead(out var record))
                {
                    try
                    {
                        await _sink.WriteAsync(record, token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (token.IsCancellationRequested)
                    {
                        return;
                    }
                    catch (Exception ex) when (ex is not OutOfMemoryException)
                    {
                        OnFailure(ex);
                    }

                    Interlocked.Increment(ref _written);
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Shut down.
        }
    }

    private void OnFailure(Exception exception)
    {
        long failures = Interlocked.Increment(ref _failures);
        long now = _time.GetTimestamp();
        if (_failureLogged && _time.GetElapsedTime(_lastFailureLog, now) < _logInterval)
        {
            return;
        }

        _failureLogged = true;
        _lastFailureLog = now;
        long count = failures - _failuresLogged;
        _failuresLogged = failures;
        Log.AuditSinkFailed(_logger, SinkName, count, exception);
    }
}
