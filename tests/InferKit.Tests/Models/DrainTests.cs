using InferKit.Backends;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace InferKit.Tests.Models;

/// <summary>The registry's drain (the host's stop): it refuses new work for every model, loaded or not, and a cancelled stop ends gracefully.</summary>
public sealed class DrainTests
{
    [Fact]
    public async Task A_stop_whose_token_is_cancelled_while_a_batch_runs_gives_up_the_drain_with_a_warning_instead_of_throwing()
    {
        var backend = new FakeBackend();
        var logs = new FakeLoggerProvider();
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(logs));
        services.AddInferKit().AddModel("m", _ => backend);
        await using var provider = services.BuildServiceProvider();
        using var release = new GateOpener(backend.Release);
        var registry = provider.GetRequiredService<IModelRegistry>();
        await registry.LoadAllAsync();
        var hosted = provider.GetServices<IHostedService>().Single();
        await hosted.StartAsync(CancellationToken.None);

        backend.Hold();
        var client = provider.GetRequiredService<IInferenceClient>();
        var running = Task.Run(async () => await client.InferAsync("m", FakeBackend.Request(1)));
        await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));

        // The host's shutdown timeout has passed: its token is cancelled. The stop stops being graceful; it does not fail.
        using var expired = new CancellationTokenSource();
        expired.Cancel();
        var outcome = await Record.ExceptionAsync(() => hosted.StopAsync(expired.Token).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Null(outcome);
        Assert.Contains(logs.Collector.GetSnapshot(), static l => l.Id.Id == 1010 && l.Level == LogLevel.Warning);

        // The request it gave up waiting for is still answered once its run ends.
        backend.Release();
        using var r = await running.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(r.IsSuccess);
    }
}
