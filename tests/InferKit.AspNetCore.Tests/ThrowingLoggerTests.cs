using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>
/// A logging provider that throws on InferKit's log lines (ASP.NET Core's own lines are left alone) must not change
/// the answer to a request: a bad request is still 400 and a refusal still 503, not a 500 from the failed log line.
/// </summary>
public sealed class ThrowingLoggerTests
{
    private const string Valid = """{"id":"ok","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""";
    private const string WrongShape = """{"id":"bad","inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}""";

    [Fact]
    public async Task Bad_requests_and_refusals_keep_their_status_when_logging_them_throws()
    {
        var provider = new InferKitThrowingLog();
        await using var host = await KestrelHost.StartAsync(
            ik =>
            {
                ik.AddModel("affine", _ => new AffineBackend());
                ik.AddModel("broken", _ => throw new InvalidOperationException("factory boom"), o => o.Required = false);
            },
            configure: b =>
            {
                b.Logging.AddProvider(provider);
                b.Logging.AddFilter("InferKit", LogLevel.Debug); // the handler's lines are Debug
            });

        using (var bad = await host.PostJsonAsync("/v2/models/affine/infer", "{not json"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        }

        using (var wrongShape = await host.PostJsonAsync("/v2/models/affine/infer", WrongShape))
        {
            Assert.Equal(HttpStatusCode.BadRequest, wrongShape.StatusCode);
        }

        using (var refused = await host.PostJsonAsync("/v2/models/broken/infer", Valid))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        }

        using (var ok = await host.PostJsonAsync("/v2/models/affine/infer", Valid))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        Assert.True(provider.Thrown >= 3, $"Expected the provider to throw on each InferKit log line; it threw {provider.Thrown} time(s).");
    }

    /// <summary>Throws on every line logged under an "InferKit" category.</summary>
    private sealed class InferKitThrowingLog : ILoggerProvider
    {
        public int Thrown;

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName.StartsWith("InferKit", StringComparison.Ordinal));

        public void Dispose()
        {
        }

        private sealed class Logger(InferKitThrowingLog owner, bool throws) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (throws)
                {
                    Interlocked.Increment(ref owner.Thrown);
                    throw new InvalidOperationException($"logger boom ({eventId.Id})");
                }
            }
        }
    }
}
