using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Telemetry;

/// <summary>
/// The logger every InferKit part writes through. Logging providers are user code, and InferKit logs from timer
/// callbacks, thread-pool work items, its runner thread, background loops, batch completion, loading and disposal:
/// a provider that throws (the logger factory's logger calls every provider, then rethrows their failures as one
/// <see cref="AggregateException"/>) would there kill the process, fail a batch that succeeded, stop a background loop
/// for good, or cut a disposal short. This wrapper swallows what logging throws: the message is lost to the failing
/// provider only (the others were already called), and what InferKit was doing goes on.
/// </summary>
internal sealed class SafeLogger : ILogger
{
    private readonly ILogger _inner;

    private SafeLogger(ILogger inner) => _inner = inner;

    /// <summary>Wraps <paramref name="logger"/>; one already wrapped, or the null logger, is returned as it is.</summary>
    public static ILogger Wrap(ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(logger);
        return logger is SafeLogger || ReferenceEquals(logger, NullLogger.Instance) ? logger : new SafeLogger(logger);
    }

    /// <summary>Creates the logger for <paramref name="category"/>, wrapped.</summary>
    public static ILogger Create(ILoggerFactory factory, string category) => Wrap(factory.CreateLogger(category));

    /// <inheritdoc/>
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            _inner.Log(logLevel, eventId, state, exception, formatter);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A logging provider's failure: there is nowhere left to report it.
        }
    }

    /// <inheritdoc/>
    /// <remarks>A provider that throws here counts as enabled: <see cref="Log{TState}"/> still reaches the others.</remarks>
    public bool IsEnabled(LogLevel logLevel)
    {
        try
        {
            return _inner.IsEnabled(logLevel);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return logLevel != LogLevel.None;
        }
    }

    /// <inheritdoc/>
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull
    {
        try
        {
            return _inner.BeginScope(state);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return null;
        }
    }
}
