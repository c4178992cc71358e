using InferKit.Backends;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Models;

/// <summary>The registry's drain (the host's stop): it refuses new work for every model, loaded or not, and a cancelled stop ends gracefully.</summary>
public sealed class DrainTests
{
    /// <summary>A fake whose warm-up waits at a gate.</summary>
    private sealed class HeldWarmupBackend(FakeBackend inner, Gate gate) : IModelBackend
    {
        public System.Collections.Concurrent.ConcurrentQueue<float[]> Batches => inner.Batches;

        public TaskCompletionSource WarmupEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ModelSignature Signature => inner.Signature;

        public ExecutionProviderInfo Provider => inner.Provider;

        public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
        {
            if (inputs[0].GetSpan<float>()[0] == 0)
            {
                WarmupEntered.TrySetResult();
                gate.Wait(cancellationToken);
            }

            inner.Run(inputs, sink, cancellationToken);
        }

        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public async Task After_the_drain_began_a_model_not_loaded_yet_refuses_requests_instead_of_loading_and_serving_them()
    {
        var backend = new FakeBackend();
        int created = 0;
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ =>
        {
            Interlocked.Increment(ref created);
            return backend;
        });
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var client = provider.GetRequiredService<IInferenceClient>();

        Assert.True(await registry.DrainAsync(TimeSpan.FromSeconds(30)));
        using var r = await client.InferAsync("m", FakeBackend.Request(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
        Assert.Equal(0, created); // shutting down does not start a model's load
        Assert.Empty(backend.Batches);
    }

    [Fact]
    public async Task A_load_that_finishes_after_the_drain_began_publishes_a_draining_model_that_refuses_new_work()
    {
        var gate = new Gate("the warm-up");
        var backend = new HeldWarmupBackend(new FakeBackend(), gate);
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => backend);
        await using var provider = services.BuildServiceProvider();
        using var open = gate.OpenOnDispose();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var client = provider.GetRequiredService<IInferenceClient>();
        var loading = registry.LoadAsync("m");
        await backend.WarmupEntered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // A request that came before the drain waits for the load (it has no deadline to give up at).
        var waiting = client.InferAsync("m", FakeBackend.Request(1, timeout: Timeout.InfiniteTimeSpan)).AsTask();
        Assert.True(await registry.DrainAsync(TimeSpan.FromSeconds(30)));
        gate.Open();
        await loading.WaitAsync(TimeSpan.FromSeconds(30));

        // It is answered, never left waiting: the model takes no work now that it is shutting down.
        using (var w = await waiting.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.Equal(RefusalReason.ShuttingDown, w.RefusalReason);
        }

        Assert.Equal(ModelState.Draining, registry.GetModel("m").State);
        Assert.False(registry.AllRequiredModelsReady);
        using var r = await client.InferAsync("m", FakeBackend.Request(2)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
        Assert.Empty(backend.Batches);
    }

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

    [Theory]
    [InlineData(-5_000.0)]
    [InlineData(100.0 * 24 * 3600 * 1000)]
    public async Task A_drain_timeout_out_of_range_is_refused_before_admission_closes(double milliseconds)
    {
        await using var h = await Harness.CreateAsync();
        var timeout = TimeSpan.FromMilliseconds(milliseconds);
        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => h.Registry.DrainAsync(timeout));
        Assert.Equal("timeout", ex.ParamName);
        Assert.Contains("Timeout.InfiniteTimeSpan", ex.Message, StringComparison.Ordinal);

        // The invalid call changed nothing: the model still serves.
        using var r = await h.Client.InferAsync("m", FakeBackend.Request(1));
        Assert.True(r.IsSuccess);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task After_the_drain_began_virtual_models_over_members_not_loaded_refuse_as_shutting_down_and_start_no_load(bool cascade)
    {
        int created = 0;
        var services = new ServiceCollection();
        var builder = services.AddInferKit()
            .AddModel("small", _ =>
            {
                Interlocked.Increment(ref created);
                return new FakeBackend();
            })
            .AddModel("large", _ =>
            {
                Interlocked.Increment(ref created);
                return new FakeBackend();
            });
        if (cascade)
        {
            builder.AddCascade("v", c => c.Then("small", InferKit.Selection.AcceptanceRule.TopProbability(0.75, output: "y")).Then("large"));
        }
        else
        {
            builder.AddAdaptiveModel("v", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
            });
        }

        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        Assert.True(await registry.DrainAsync(TimeSpan.FromSeconds(30)));

        using var r = await provider.GetRequiredService<IInferenceClient>().InferAsync("v", FakeBackend.Request(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
        Assert.Equal(0, created);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_request_waiting_for_a_load_that_hangs_is_answered_when_the_registry_is_disposed(bool withDeadline)
    {
        // A request with no deadline waits for the whole load, one with a deadline until its deadline. When the registry is
        // disposed, no load publishes any more, and its unload gives up on a load that hangs after the drain timeout: the
        // request must not be left waiting for that load (for ever, or until a deadline an hour away).
        var drain = TimeSpan.FromMilliseconds(100);
        var time = new FakeTimeProvider();
        var gate = new Gate("the warm-up");
        using var open = gate.OpenOnDispose();
        var backend = new HeldWarmupBackend(new FakeBackend(), gate);
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit(o => o.DrainTimeout = drain).AddModel("m", _ => backend);
        var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<ModelRegistry>();
        var waiting = registry.InferAsync("m", FakeBackend.Request(1, timeout: withDeadline ? TimeSpan.FromHours(1) : null)).AsTask();
        await backend.WarmupEntered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(waiting.IsCompleted);

        var disposing = registry.DisposeAsync().AsTask();
        time.Advance(drain);
        await disposing.WaitAsync(TimeSpan.FromSeconds(30));

        // Answered while the load still hangs: refused as shutting down, not left waiting.
        var answered = await Record.ExceptionAsync(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.IsNotType<TimeoutException>(answered);
        Assert.False(gate.IsOpen);
        using var r = await waiting;
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);

        gate.Open();
        await provider.DisposeAsync();
    }

    [Fact]
    public async Task Disposal_after_a_drain_that_timed_out_waits_only_for_what_is_left_of_that_drain_timeout_not_a_second_one()
    {
        // Shutdown finishes accepted work within the drain timeout, then disposes. The host's stop drained for the whole
        // timeout while a batch still ran; disposing the container then waited for that batch a second drain timeout.
        var drain = TimeSpan.FromSeconds(30);
        var time = new FakeTimeProvider();
        var backend = new FakeBackend();
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit(o => o.DrainTimeout = drain).AddModel("m", _ => backend);
        var provider = services.BuildServiceProvider();
        using var release = new GateOpener(backend.Release);
        var registry = provider.GetRequiredService<ModelRegistry>();
        await registry.LoadAllAsync();
        var hosted = provider.GetServices<IHostedService>().Single();
        await hosted.StartAsync(CancellationToken.None);

        backend.Hold();
        var running = Task.Run(async () => await registry.InferAsync("m", FakeBackend.Request(1)));
        await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));

        var stopping = hosted.StopAsync(CancellationToken.None);
        time.Advance(drain); // the drain timeout passes with the batch still running
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));

        // The clock stands still now: the disposal has no drain time left to wait, so it returns with the batch running.
        var disposing = provider.DisposeAsync().AsTask();
        var outcome = await Record.ExceptionAsync(() => disposing.WaitAsync(TimeSpan.FromSeconds(10)));
        bool disposedUnderRun = backend.Disposed;
        backend.Release();
        Assert.IsNotType<TimeoutException>(outcome);
        Assert.False(disposedUnderRun, "the backend was disposed under its running batch");

        // The batch still ends and is answered; its instance is disposed after it, in the background.
        using var r = await running.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(r.IsSuccess);
        await disposing.WaitAsync(TimeSpan.FromSeconds(30));
    }
}
