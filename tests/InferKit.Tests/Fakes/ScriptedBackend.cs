using System.Collections.Concurrent;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Tensors;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Fakes;

/// <summary>Runs one batch of a <see cref="ScriptedBackend"/>: the joined inputs in, every output to the sink.</summary>
internal delegate void ScriptedRun(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink);

/// <summary>
/// A backend with the signature a test gives and a run the test writes, for tests of how requests are checked, joined,
/// padded and split. It records the input shapes of every run after warm-up.
/// </summary>
internal sealed class ScriptedBackend(ModelSignature signature, ScriptedRun run) : IModelBackend
{
    public ModelSignature Signature { get; } = signature;

    public ExecutionProviderInfo Provider { get; } = new("Fake", "Fake");

    /// <summary>Each run's inputs as "name: Type[shape]", joined by spaces, in order.</summary>
    public ConcurrentQueue<string> Runs { get; } = new();

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        var described = new string[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            described[i] = inputs[i].ToString();
        }

        Runs.Enqueue(string.Join(' ', described));
        run(inputs, sink);
    }

    public void Dispose()
    {
    }

    /// <summary>
    /// Serves <paramref name="backend"/> as model "m" on a fake clock, warmed up, its warm-up runs forgotten. With
    /// <paramref name="joinDelay"/>, requests wait that long for company: send them, then advance the clock by it to
    /// run them as one batch.
    /// </summary>
    public static async Task<ScriptedHost> StartAsync(ScriptedBackend backend, Action<ModelOptions>? configure = null, TimeSpan? joinDelay = null)
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit().AddModel("m", _ => backend, o =>
        {
            o.Batching.MaxBatchSize = 16;
            if (joinDelay is TimeSpan delay)
            {
                o.Batching.MaxQueueDelay = delay;
            }

            configure?.Invoke(o);
        });
        var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        backend.Runs.Clear();
        return new ScriptedHost(provider, time);
    }
}

/// <summary>A container serving one <see cref="ScriptedBackend"/> as model "m".</summary>
internal sealed class ScriptedHost(ServiceProvider provider, FakeTimeProvider time) : IAsyncDisposable
{
    public FakeTimeProvider Time { get; } = time;

    public IInferenceClient Client { get; } = provider.GetRequiredService<IInferenceClient>();

    public Task<InferenceResponse> Send(InferenceRequest request) => Client.InferAsync("m", request).AsTask();

    public ValueTask DisposeAsync() => provider.DisposeAsync();
}
