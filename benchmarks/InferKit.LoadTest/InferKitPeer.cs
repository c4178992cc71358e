using System.Diagnostics;
using System.Diagnostics.Metrics;
using InferKit.Telemetry;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.LoadTest;

/// <summary>
/// InferKit in-process: IInferenceClient over the same model. Closed loop: N async callers, each awaiting one
/// request at a time (a new request per call over the caller's own row), reading its probabilities, disposing the response.
/// </summary>
internal sealed class InferKitPeer : IClosedLoopPeer, IDisposable
{
    private readonly ServiceProvider _services;
    private readonly Workload _workload;
    private readonly MeterListener _listener;
    private long _batches;
    private long _batchRows;
    private double _computeSeconds;

    private InferKitPeer(string name, ServiceProvider services, Workload workload)
    {
        Name = name;
        _services = services;
        _workload = workload;

        // Per-batch instruments only (batch size, compute time) of this host's meter: how many batches ran, how full,
        // and how busy the instances were. Nothing per request, so the request path is measured as it is.
        var factory = services.GetRequiredService<IMeterFactory>();
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == InferKitTelemetry.Name && ReferenceEquals(instrument.Meter.Scope, factory)
                    && instrument.Name is "inferkit.batch.size" or "inferkit.batch.compute.duration")
                {
                    listener.EnableMeasurementEvents(instrument, this);
                }
            },
        };
        _listener.SetMeasurementEventCallback<int>(static (_, rows, _, state) =>
        {
            var peer = (InferKitPeer)state!;
            Interlocked.Increment(ref peer._batches);
            Interlocked.Add(ref peer._batchRows, rows);
        });
        _listener.SetMeasurementEventCallback<double>(static (_, seconds, _, state) =>
        {
            var peer = (InferKitPeer)state!;
            double seen = Volatile.Read(ref peer._computeSeconds);
            while (true)
            {
                double was = Interlocked.CompareExchange(ref peer._computeSeconds, seen + seconds, seen);
                if (was == seen)
                {
                    break;
                }

                seen = was;
            }
        });
        _listener.Start();
        Client = services.GetRequiredService<IInferenceClient>();
    }

    /// <summary>Batches run, rows in them and instance compute seconds, so far.</summary>
    public (long Batches, long Rows, double ComputeSeconds) BatchCounters =>
        (Interlocked.Read(ref _batches), Interlocked.Read(ref _batchRows), Volatile.Read(ref _computeSeconds));

    /// <summary>Adds batches/s, rows per batch and instance busy share over a slice to the stats.</summary>
    public void AddBatchStats(PeerStats stats, (long Batches, long Rows, double ComputeSeconds) before)
    {
        var (batches, rows, compute) = BatchCounters;
        stats.Extra.TryGetValue("batches", out var b);
        stats.Extra.TryGetValue("batch_rows", out var r);
        stats.Extra.TryGetValue("compute_s", out var c);
        stats.Extra["batches"] = b + (batches - before.Batches);
        stats.Extra["batch_rows"] = r + (rows - before.Rows);
        stats.Extra["compute_s"] = c + (compute - before.ComputeSeconds);
        stats.Extra["batches_per_s"] = stats.Extra["batches"] / stats.Seconds;
        stats.Extra["rows_per_batch"] = stats.Extra["batches"] == 0 ? double.NaN : stats.Extra["batch_rows"] / stats.Extra["batches"];
        stats.Extra["instance_busy"] = stats.Extra["compute_s"] / stats.Seconds;
    }

    public string Name { get; }

    /// <summary>True once a run ended with callers that never got an answer.</summary>
    public bool Stalled { get; private set; }

    public IInferenceClient Client { get; }

    /// <summary>
    /// Whether the peer's callers let InferKit run their continuation on the thread that finished the batch
    /// (<see cref="InferenceRequest.AllowSynchronousContinuation"/>, as the protocol endpoint does): what follows each await
    /// here only records the answer and sends the next request.
    /// </summary>
    public bool SynchronousContinuations { get; set; }

    public Workload Workload => _workload;

    public IModelRegistry Registry => _services.GetRequiredService<IModelRegistry>();

    /// <summary>An ONNX model host with the given model options (defaults: one instance, MaxBatchSize 64).</summary>
    public static Task<InferKitPeer> CreateOnnxAsync(string name, Workload workload, Action<ModelOptions>? configure = null) =>
        CreateAsync(name, workload, b => b.AddOnnxModel(Workload.ModelName, ModelSource.FromBytes(workload.Bytes), o =>
        {
            o.Batching.MaxBatchSize = 64;
            configure?.Invoke(o);
        }));

    /// <summary>Builds a host and loads its models; throws what start-up validation or loading throws.</summary>
    public static async Task<InferKitPeer> CreateAsync(string name, Workload workload, Action<IInferKitBuilder> addModels)
    {
        var services = new ServiceCollection();
        addModels(services.AddInferKit());
        var provider = services.BuildServiceProvider();
        try
        {
            var peer = new InferKitPeer(name, provider, workload);
            await peer.Registry.LoadAllAsync();
            return peer;
        }
        catch
        {
            await provider.DisposeAsync();
            throw;
        }
    }

    public void Run(int callers, TimeSpan duration, PeerStats stats)
    {
        var before = BatchCounters;
        var stop = new StrongBox<bool>();
        var tasks = new Task[callers];
        long start = Stopwatch.GetTimestamp();
        for (int c = 0; c < callers; c++)
        {
            int id = c;
            tasks[c] = Task.Run(() => CallerAsync(id, stop, stats));
        }

        Thread.Sleep(duration);
        Volatile.Write(ref stop.Value, true);

        // Watchdog: a caller whose request is never answered would hang the run. Report it and move on; disposing
        // the host answers whatever is still queued.
        if (!Task.WaitAll(tasks, TimeSpan.FromSeconds(20)))
        {
            int stuck = tasks.Count(t => !t.IsCompleted);
            var state = Diagnose();
            stats.Error($"STALLED: {stuck} of {callers} callers had no answer 20 s after the run ended ({state}).");
            Console.WriteLine($"  !! {Name}: {stuck} callers stalled: {state}");
            Stalled = true;
        }

        stats.AddActive(Stopwatch.GetTimestamp() - start);
        AddBatchStats(stats, before);
    }

    /// <summary>Disposes the host: queued requests are refused (ShuttingDown), sessions are released.</summary>
    public void Dispose()
    {
        _listener.Dispose();
        _services.Dispose();
    }

    /// <summary>The model and instance state, for a stall report.</summary>
    private string Diagnose()
    {
        try
        {
            var registry = Registry;
            var info = registry.GetModel(Workload.ModelName);
            var instances = string.Join(", ", info.Instances.Select(i => $"{i.Id}: outstanding {i.Outstanding}"));
            return $"model state {info.State}; instances {instances}";
        }
#pragma warning disable CA1031 // Diagnostics only.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return ex.Message;
        }
    }

    private async Task CallerAsync(int id, StrongBox<bool> stop, PeerStats stats)
    {
        var data = _workload.Input(id);
        int width = _workload.InputSize;
        while (!Volatile.Read(ref stop.Value))
        {
            long t0 = Stopwatch.GetTimestamp();
            try
            {
                var request = new InferenceRequest(Tensor.Create(MlpModel.InputName, data, 1, width)) { AllowSynchronousContinuation = SynchronousContinuations };
                using var response = await Client.InferAsync(Workload.ModelName, request);
                long t1 = Stopwatch.GetTimestamp();
                Classify(id, response, t0, t1, stats);
            }
#pragma warning disable CA1031 // A load generator counts every failure and goes on.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                stats.Error(ex);
            }
        }
    }

    internal void Classify(int id, InferenceResponse response, long t0, long t1, PeerStats stats)
    {
        switch (response.Status)
        {
            case InferenceStatus.Success:
                if (_workload.Matches(id, response[MlpModel.ProbabilitiesName].GetSpan<float>()))
                {
                    stats.Success(t1 - t0, 1, response.BatchSize);
                }
                else
                {
                    stats.WrongOutput();
                }

                break;
            case InferenceStatus.Refused:
                stats.Refusal(t1 - t0);
                break;
            default:
                stats.Expiry();
                break;
        }
    }

    private sealed class StrongBox<T>
    {
        public T Value = default!;
    }
}
