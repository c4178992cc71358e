using InferKit.Models;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Fakes;

/// <summary>An InferKit container over fake backends and a fake clock, models loaded, warm-up records cleared.</summary>
internal sealed class Harness : IAsyncDisposable
{
    private readonly ServiceProvider _provider;

    private Harness(ServiceProvider provider, FakeTimeProvider time, FakeBackend[] backends)
    {
        _provider = provider;
        Time = time;
        Backends = backends;
    }

    public FakeTimeProvider Time { get; }

    public FakeBackend[] Backends { get; }

    public FakeBackend Backend => Backends[0];

    public IInferenceClient Client => _provider.GetRequiredService<IInferenceClient>();

    public IModelRegistry Registry => _provider.GetRequiredService<IModelRegistry>();

    public IServiceProvider Services => _provider;

    internal ModelRegistry InternalRegistry => _provider.GetRequiredService<ModelRegistry>();

    public static async Task<Harness> CreateAsync(
        Action<ModelOptions>? configure = null,
        int instances = 1,
        bool batchable = true,
        Func<int, TimeSpan>? computeTime = null,
        Action<IServiceCollection>? services = null)
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var backends = new FakeBackend[instances];
        for (int i = 0; i < instances; i++)
        {
            backends[i] = new FakeBackend($"fake{i}", batchable, time, computeTime);
        }

        var sc = new ServiceCollection();
        sc.AddSingleton<TimeProvider>(time);
        services?.Invoke(sc);
        sc.AddInferKit(o => o.RandomSeed = 7).AddModel("m", ctx => backends[ctx.InstanceIndex], o =>
        {
            o.Instances = instances;
            configure?.Invoke(o);
        });
        var provider = sc.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        foreach (var b in backends)
        {
            b.Batches.Clear();
            b.Threads.Clear();
            b.Runs = 0;
        }

        return new Harness(provider, time, backends);
    }

    /// <summary>Occupies the single instance with request <paramref name="id"/> and waits until it runs.</summary>
    public async Task<Task<InferenceResponse>> OccupyAsync(int id = 1000)
    {
        Backend.Hold();
        var running = Task.Run(async () => await Client.InferAsync("m", FakeBackend.Request(id)));
        await Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        return running;
    }

    /// <summary>The ids of each batch's rows, warm-up excluded.</summary>
    public List<float[]> BatchIds() => Backend.Batches.ToList();

    /// <summary>
    /// Lets every held run go, then disposes the container. A test that fails before it releases the gate would otherwise
    /// wait here for ever: the unload waits for the held run, bounded by a drain timeout on the fake clock, which stands still.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var backend in Backends)
        {
            backend.Release();
        }

        await _provider.DisposeAsync();
    }
}
