using System.Diagnostics.Metrics;
using System.Globalization;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Telemetry;

/// <summary>
/// Like <see cref="Harness"/>, but the container is built before the models load, so metric collectors can attach to
/// the service provider's <see cref="IMeterFactory"/> (and see the load), logs go to a fake collector, and the
/// InferKit builder can be configured (audit sinks, alert rules).
/// </summary>
internal sealed class TelemetryHarness : IAsyncDisposable
{
    private readonly ServiceProvider _provider;

    private TelemetryHarness(ServiceProvider provider, FakeTimeProvider time, FakeBackend[] backends, string model, FakeLoggerProvider logs)
    {
        _provider = provider;
        Time = time;
        Backends = backends;
        Model = model;
        Logs = logs;
    }

    public FakeTimeProvider Time { get; }

    public FakeBackend[] Backends { get; }

    public FakeBackend Backend => Backends[0];

    public string Model { get; }

    public FakeLoggerProvider Logs { get; }

    public IServiceProvider Services => _provider;

    public IInferenceClient Client => _provider.GetRequiredService<IInferenceClient>();

    public IModelRegistry Registry => _provider.GetRequiredService<IModelRegistry>();

    public IInferKitAlerts Alerts => _provider.GetRequiredService<IInferKitAlerts>();

    public IMeterFactory MeterFactory => _provider.GetRequiredService<IMeterFactory>();

    /// <summary>Builds the container; nothing is loaded or resolved yet.</summary>
    public static TelemetryHarness Create(
        Action<ModelOptions>? configure = null,
        int instances = 1,
        Func<int, TimeSpan>? computeTime = null,
        Action<IInferKitBuilder>? inferKit = null,
        Action<IServiceCollection>? services = null,
        string model = "m",
        Func<FakeBackend, IModelBackend>? wrap = null)
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", CultureInfo.InvariantCulture));
        var backends = new FakeBackend[instances];
        for (int i = 0; i < instances; i++)
        {
            backends[i] = new FakeBackend($"fake{i}", batchable: true, time, computeTime);
        }

        var logs = new FakeLoggerProvider();
        var sc = new ServiceCollection();
        sc.AddSingleton<TimeProvider>(time);
        sc.AddLogging(b => b.AddProvider(logs));
        services?.Invoke(sc);
        var builder = sc.AddInferKit(o => o.RandomSeed = 7).AddModel(model, ctx => wrap is null ? backends[ctx.InstanceIndex] : wrap(backends[ctx.InstanceIndex]), o =>
        {
            o.Instances = instances;
            configure?.Invoke(o);
        });
        inferKit?.Invoke(builder);
        return new TelemetryHarness(sc.BuildServiceProvider(), time, backends, model, logs);
    }

    /// <summary>Loads the models and clears the fake backends' records of the warm-up.</summary>
    public async Task LoadAsync()
    {
        await Registry.LoadAllAsync();
        foreach (var b in Backends)
        {
            b.Batches.Clear();
            b.Runs = 0;
        }
    }

    public MetricCollector<T> Collect<T>(string instrument)
        where T : struct => new(MeterFactory, InferKitTelemetry.Name, instrument);

    public ValueTask<InferenceResponse> Send(int id, TimeSpan? timeout = null) => Client.InferAsync(Model, FakeBackend.Request(id, timeout: timeout));

    /// <summary>Occupies the single instance with request <paramref name="id"/> and waits until it runs.</summary>
    public async Task<Task<InferenceResponse>> OccupyAsync(int id = 1000)
    {
        Backend.Hold();
        var running = Task.Run(async () => await Send(id));
        await Backend.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        return running;
    }

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
