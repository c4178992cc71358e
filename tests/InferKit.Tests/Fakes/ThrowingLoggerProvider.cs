using Microsoft.Extensions.Logging;

namespace InferKit.Tests.Fakes;

/// <summary>
/// A logging provider whose loggers throw on every message while <see cref="Throwing"/> is set (a broken sink, a full
/// disk). The logger factory still calls the other providers, then rethrows as an <see cref="AggregateException"/>.
/// </summary>
internal sealed class ThrowingLoggerProvider : ILoggerProvider
{
    private volatile bool _throwing = true;

    /// <summary>Whether loggers throw now (true at first).</summary>
    public bool Throwing
    {
        get => _throwing;
        set => _throwing = value;
    }

    /// <summary>Messages that were thrown on.</summary>
    public int Thrown;

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    /// <summary>
    /// Stops the throwing when disposed: declared after a harness, it keeps the harness's own disposal out of a test about
    /// another path.
    /// </summary>
    public IDisposable QuietAtEnd() => new Quiet(this);

    public void Dispose()
    {
    }

    private sealed class Quiet(ThrowingLoggerProvider owner) : IDisposable
    {
        public void Dispose() => owner.Throwing = false;
    }

    private sealed class Logger(ThrowingLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (owner.Throwing)
            {
                Interlocked.Increment(ref owner.Thrown);
                throw new InvalidOperationException($"logger boom ({eventId.Id})");
            }
        }
    }
}
