using InferKit.Backends;
using InferKit.DependencyInjection;
using InferKit.LoadBalancing;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Models;

/// <summary>Loading, unloading and stopping while things go wrong: throwing disposal, hanging warm-up, runs in flight.</summary>
public sealed class LifecycleTests
{
    /// <summary>A fake whose warm-up run can fail or wait at a gate, and whose Dispose can throw.</summary>
    private sealed class ProbeBackend(FakeBackend inner) : IModelBackend
    {
        public Exception? WarmupFailure { get; init; }

        public Gate? WarmupGate { get; init; }

        public TaskCompletionSource WarmupEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool ThrowOnDispose { get; init; }

        public int DisposeCalls;

        /// <summary>When set, Dispose waits for it (a session that takes long to release, a user's backend that blocks).</summary>
        public Gate? DisposeGate { get; init; }

        /// <summary>Completes when Dispose is entered.</summary>
        public TaskCompletionSource Disposing { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes when Dispose returns.</summary>
        public TaskCompletionSource DisposeReturned { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ModelSignature Signature => inner.Signature;

        /// <summary>When set, reading <see cref="Provider"/> throws it (a custom backend that cannot say what serves it).</summary>
        public Exception? ProviderFailure { get; init; }

        public ExecutionProviderInfo Provider => ProviderFailure is { } failure ? throw failure : inner.Provider;

        public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
        {
            bool warmup = inputs[0].GetSpan<float>()[0] == 0;
            if (warmup)
            {
                WarmupEntered.TrySetResult();
                WarmupGate?.Wait(cancellationToken);
                if (WarmupFailure is { } failure)
                {
                    throw failure;
                }
            }

            inner.Run(inputs, sink, cancellationToken);
        }

        public void Dispose()
        {
            Interlocked.Increment(ref DisposeCalls);
            Disposing.TrySetResult();
            DisposeGate?.Wait();
            inner.Dispose();
            DisposeReturned.TrySetResult();
            if (ThrowOnDispose)
            {
                throw new InvalidOperationException("native handle already released");
            }
        }
    }

    [Fact]
    public async Task A_load_whose_warm_up_fails_and_whose_backend_dispose_throws_is_reported_failed_and_can_be_retried()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new ProbeBackend(new FakeBackend())
        {
            WarmupFailure = new InvalidOperationException("warm-up blew up"),
            ThrowOnDispose = true,
        });
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();

        // The load fails for its real reason, and the model says so (it is not left "loading" forever).
        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => registry.LoadAsync("m"));
        Assert.Contains("warm-up blew up", ex.Message, StringComparison.Ordinal);
        var info = registry.GetModel("m");
        Assert.Equal(ModelState.Failed, info.State);
        Assert.Contains("warm-up blew up", info.Error, StringComparison.Ordinal);

        // A request is refused with a reason, after another load attempt, rather than hanging or throwing the dispose error.
        using var r = await provider.GetRequiredService<IInferenceClient>().InferAsync("m", FakeBackend.Request(1));
        Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
    }

    [Fact]
    public async Task A_load_that_fails_after_its_instances_were_built_never_leaves_a_published_version_whose_backends_it_disposed()
    {
        // Reading the backend's Provider (for the "model loaded" log line) threw once the load had already published its
        // version: the load's failure handling then disposed the instances of the version that served, and every later
        // request ran on a disposed backend (with ONNX Runtime, a crash of the process).
        var built = new System.Collections.Concurrent.ConcurrentQueue<FakeBackend>();
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ =>
        {
            var inner = new FakeBackend();
            built.Enqueue(inner);
            return new ProbeBackend(inner) { ProviderFailure = new InvalidOperationException("provider unknown") };
        });
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();

        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => registry.LoadAsync("m"));
        Assert.Contains("provider unknown", ex.Message, StringComparison.Ordinal);

        using var r = await provider.GetRequiredService<IInferenceClient>().InferAsync("m", FakeBackend.Request(1));
        Assert.All(built, static b => Assert.Equal(0, b.RunsAfterDispose));
        Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
        Assert.Equal(ModelState.Failed, registry.GetModel("m").State);
    }

    [Fact]
    public async Task Unloading_goes_on_past_a_backend_whose_dispose_throws_and_disposes_every_other_model()
    {
        var throwing = new ProbeBackend(new FakeBackend()) { ThrowOnDispose = true };
        var sibling = new FakeBackend();
        var other = new FakeBackend();
        int created = 0;
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("a", _ => Interlocked.Increment(ref created) == 1 ? throwing : new ProbeBackend(sibling), o => o.Instances = 2)
            .AddModel("b", _ => other);
        var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<ModelRegistry>();
        await registry.LoadAllAsync();

        await registry.DisposeAsync();

        Assert.Equal(1, throwing.DisposeCalls);
        Assert.True(sibling.Disposed, "the other instance of the same model was left undisposed");
        Assert.True(other.Disposed, "another model was left undisposed");
        Assert.Equal(ModelState.Unloaded, registry.GetModel("b").State);
        await provider.DisposeAsync();
    }

    [Fact]
    public async Task A_batch_retried_after_a_failure_never_runs_on_an_instance_the_unload_already_disposed()
    {
        await using var h = await Harness.CreateAsync(o => o.LoadBalancing = "RoundRobin", instances: 2);

        // Round robin: the first request runs on instance 0, the second on instance 1, where it is held.
        using (var first = await h.Client.InferAsync("m", FakeBackend.Request(1)))
        {
            Assert.Equal("m/1/0", first.Instance);
        }

        h.Backends[1].Hold();
        h.Backends[1].Failure = () => new InvalidOperationException("instance 1 failed");
        var running = Task.Run(async () => await h.Client.InferAsync("m", FakeBackend.Request(2)));
        await h.Backends[1].Entered.WaitAsync(TimeSpan.FromSeconds(30));

        // Unload while it runs: instance 0 is idle and is disposed; instance 1 is waited for.
        var unloading = h.InternalRegistry.DisposeAsync().AsTask();
        while (!h.Backends[0].Disposed)
        {
            Assert.False(unloading.IsCompleted);
            await Task.Yield();
        }

        // Instance 1 fails; the batch must not be retried on the disposed instance 0 (with ONNX Runtime: a crash).
        h.Backends[1].Release();
        var outcome = await Record.ExceptionAsync(async () => (await running.WaitAsync(TimeSpan.FromSeconds(30))).Dispose());
        await unloading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, h.Backends[0].RunsAfterDispose);
        Assert.IsType<InferenceFailedException>(outcome);
        Assert.True(h.Backends[1].Disposed);
    }

    [Fact]
    public async Task Unloading_disposes_an_instance_as_soon_as_its_running_batch_ends_without_the_clock_moving()
    {
        await using var h = await Harness.CreateAsync();
        var running = await h.OccupyAsync(1);

        var unloading = h.InternalRegistry.DisposeAsync().AsTask();
        Assert.False(unloading.IsCompleted); // it waits for the batch, which holds the instance
        Assert.False(h.Backend.Disposed);

        // The batch ends: the instance closes on that signal and is disposed; the fake clock never moves.
        h.Backend.Release();
        using (var r = await running.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        await unloading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(h.Backend.Disposed);
        Assert.Equal(0, h.Backend.RunsAfterDispose);
    }

    [Fact]
    public async Task Unloading_gives_up_on_a_batch_that_outlasts_the_drain_timeout_on_the_injected_clock_and_leaves_its_instance_undisposed_while_it_runs()
    {
        var drain = TimeSpan.FromSeconds(30);
        await using var h = await Harness.CreateAsync(services: sc => sc.Configure<InferKitOptions>(o => o.DrainTimeout = drain));
        var running = await h.OccupyAsync(1);

        var unloading = h.InternalRegistry.DisposeAsync().AsTask();
        h.Time.Advance(drain - TimeSpan.FromTicks(1));
        Assert.False(unloading.IsCompleted);

        // The drain timeout passes on the fake clock: the unload returns, and the instance still running is not disposed.
        h.Time.Advance(TimeSpan.FromTicks(1));
        await unloading.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.False(h.Backend.Disposed);

        h.Backend.Release();
        (await running.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
        Assert.Equal(0, h.Backend.RunsAfterDispose);
    }

    /// <summary>Picks the first instance with room; runs a hook once, inside the pick (to interleave a race deterministically).</summary>
    private sealed class HookStrategy : ILoadBalancingStrategy
    {
        public Action? OnPick;

        public string Name => "Hook";

        public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(this);

        private sealed class Selector(HookStrategy owner) : IInstanceSelector
        {
            public int Pick(ReadOnlySpan<InstanceLoad> candidates)
            {
                Interlocked.Exchange(ref owner.OnPick, null)?.Invoke();
                for (int i = 0; i < candidates.Length; i++)
                {
                    if (candidates[i].HasRoom)
                    {
                        return i;
                    }
                }

                return 0;
            }
        }
    }

    [Fact]
    public async Task A_request_admitted_while_the_model_is_unloaded_is_refused_not_run_on_a_disposed_instance_or_lost()
    {
        var hook = new HookStrategy();
        await using var h = await Harness.CreateAsync(o => o.LoadBalancing = "Hook", instances: 2,
            services: sc => sc.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy>(hook)));

        // The request passes admission; while it looks for an instance, the unload runs to the end on this thread.
        hook.OnPick = () => h.InternalRegistry.DisposeAsync().AsTask().GetAwaiter().GetResult();
        var answer = h.Client.InferAsync("m", FakeBackend.Request(1)).AsTask();
        Assert.True(h.Backends[0].Disposed && h.Backends[1].Disposed);

        using var r = await answer.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(0, h.Backends[0].RunsAfterDispose + h.Backends[1].RunsAfterDispose);
        Assert.Equal(RefusalReason.ShuttingDown, r.RefusalReason);
    }

    [Fact]
    public async Task Stopping_the_host_while_a_warm_up_hangs_returns_once_the_stop_is_cancelled()
    {
        var gate = new Gate("the warm-up");
        var backend = new ProbeBackend(new FakeBackend()) { WarmupGate = gate };
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddInferKit().AddModel("m", _ => backend);
        await using var provider = services.BuildServiceProvider();
        using var open = gate.OpenOnDispose(); // disposed before the provider, which waits for the held load
        var hosted = provider.GetServices<IHostedService>().Single();
        await hosted.StartAsync(CancellationToken.None);
        await backend.WarmupEntered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The host's shutdown timeout has passed: its token is cancelled. Stop must give up waiting for the load.
        using var expired = new CancellationTokenSource();
        expired.Cancel();
        var stopping = hosted.StopAsync(expired.Token);
        var outcome = await Record.ExceptionAsync(() => stopping.WaitAsync(TimeSpan.FromSeconds(20)));
        gate.Open();
        Assert.Null(outcome);
    }

    [Fact]
    public async Task Unloading_while_a_warm_up_hangs_gives_up_after_the_drain_timeout_and_the_late_load_unloads_itself()
    {
        // On the injected clock. On the real one, the late load's own unload (bounded by the same drain timeout) could
        // give up before a pool thread got to the backend's Dispose on a busy machine, and the load then ended before it.
        var drain = TimeSpan.FromMilliseconds(100);
        var time = new FakeTimeProvider();
        var gate = new Gate("the warm-up");
        using var open = gate.OpenOnDispose(); // a failing assertion does not leave the load held at the gate
        var backend = new ProbeBackend(new FakeBackend()) { WarmupGate = gate };
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit(o => o.DrainTimeout = drain).AddModel("m", _ => backend);
        var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<ModelRegistry>();
        var loading = registry.LoadAsync("m");
        await backend.WarmupEntered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // The unload waits for the hung load until the drain timeout passes (its deadline is taken when it starts).
        var disposing = registry.DisposeAsync().AsTask();
        Assert.False(disposing.IsCompleted, "the unload did not wait for the load in progress");
        time.Advance(drain);
        var outcome = await Record.ExceptionAsync(() => disposing.WaitAsync(TimeSpan.FromSeconds(30)));
        gate.Open();
        Assert.IsNotType<TimeoutException>(outcome);

        // The load finishes after the unload: it must not publish a serving model; its instances are disposed. The clock
        // no longer moves, so the late load's own unload waits for that disposal before the load ends.
        await Assert.ThrowsAsync<ObjectDisposedException>(() => loading.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, backend.DisposeCalls);
        Assert.NotEqual(ModelState.Ready, registry.GetModel("m").State);
        await provider.DisposeAsync();
    }

    [Fact]
    public async Task Unloading_returns_after_the_drain_timeout_when_a_backend_dispose_blocks_and_names_the_instance_in_a_warning()
    {
        var drain = TimeSpan.FromSeconds(30);
        var time = new FakeTimeProvider();
        var logs = new FakeLoggerProvider();
        var gate = new Gate("the backend's Dispose");
        var blocking = new ProbeBackend(new FakeBackend()) { DisposeGate = gate };
        var sibling = new ProbeBackend(new FakeBackend());
        var other = new ProbeBackend(new FakeBackend());
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddLogging(b => b.AddProvider(logs));
        services.AddInferKit(o => o.DrainTimeout = drain)
            .AddModel("a", ctx => ctx.InstanceIndex == 0 ? blocking : sibling, o => o.Instances = 2)
            .AddModel("b", _ => other);
        var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<ModelRegistry>();
        await registry.LoadAllAsync();
        var siblingInstance = registry.GetScheduler("a").Pool.Instances[1];
        Assert.Same(sibling, siblingInstance.Backend);
        try
        {
            // On its own thread: a disposal that blocked its caller would block the test too.
            var unloading = Task.Run(() => registry.DisposeAsync().AsTask());
            await blocking.Disposing.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // The other instance and the other model dispose without the clock moving. Waiting for them before the
            // clock moves keeps the test to one pending disposal: every model unloads under one shared deadline, so a
            // model reached only after the advance would get no time left and rightly be reported pending as well.
            // The sibling is waited for as the unload sees it (its instance's Dispose returned), not from inside the
            // backend's Dispose: signalled from there, its thread could still be on its way out when the clock moved.
            await siblingInstance.DisposeReturned.WaitAsync(TimeSpan.FromSeconds(30));
            await other.DisposeReturned.Task.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(SpinWait.SpinUntil(() => registry.GetModel("b").State == ModelState.Unloaded, TimeSpan.FromSeconds(30)),
                "model 'b' did not finish unloading without the clock moving");

            // The drain timeout passes on the injected clock: the unload returns though the backend's Dispose has not.
            time.Advance(drain);
            await unloading.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(1, sibling.DisposeCalls);
            Assert.Equal(1, other.DisposeCalls);
            Assert.Equal(ModelState.Unloaded, registry.GetModel("a").State);
            var warning = Assert.Single(logs.Collector.GetSnapshot(), r => r.Id.Id == 1009);
            Assert.Equal(LogLevel.Warning, warning.Level);
            Assert.Contains("Model 'a'", warning.Message, StringComparison.Ordinal);
            Assert.Contains("instance a/1/0", warning.Message, StringComparison.Ordinal);

            // The backend's Dispose finishes on its own, and nothing disposes it again (the host's disposal included).
            gate.Open();
            await blocking.DisposeReturned.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await provider.DisposeAsync();
            Assert.Equal(1, blocking.DisposeCalls);
        }
        finally
        {
            gate.Open();
        }
    }

    [Fact]
    public async Task An_instance_whose_batch_outlasts_the_drain_timeout_is_disposed_once_the_batch_ends()
    {
        var drain = TimeSpan.FromSeconds(30);
        var time = new FakeTimeProvider();
        var inner = new FakeBackend();
        var backend = new ProbeBackend(inner);
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit(o => o.DrainTimeout = drain).AddModel("m", _ => backend);
        await using var provider = services.BuildServiceProvider();
        using var release = new GateOpener(inner.Release); // disposed before the provider, which waits for the held run
        var registry = provider.GetRequiredService<ModelRegistry>();
        await registry.LoadAllAsync();
        inner.Hold();
        var running = Task.Run(async () => await registry.InferAsync("m", FakeBackend.Request(1)));
        await inner.Entered.WaitAsync(TimeSpan.FromSeconds(30));

        var unloading = registry.DisposeAsync().AsTask();
        time.Advance(drain);
        await unloading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, backend.DisposeCalls); // never under a running batch

        // The batch ends after the unload gave up on it: its session is released then, not leaked for the process's life.
        inner.Release();
        (await running.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
        await backend.DisposeReturned.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, backend.DisposeCalls);
        Assert.Equal(0, inner.RunsAfterDispose);
    }
}
