using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>A logging provider that records every line logged at <paramref name="minimum"/> or above, with its exception.</summary>
internal sealed class RecordingLog(LogLevel minimum) : ILoggerProvider
{
    private readonly LogLevel _minimum = minimum;

    public ConcurrentQueue<string> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(RecordingLog owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= owner._minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                string error = exception is null ? "" : $" ({exception.GetType().Name}: {exception.Message})";
                owner.Entries.Enqueue($"{logLevel} {category}: {formatter(state, exception)}{error}");
            }
        }
    }

}
