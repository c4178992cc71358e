using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML.OnnxRuntime;

namespace InferKit.Benchmarks;

/// <summary>
/// One caller, MLP 256→1024→10, batch of one row: the in-process InferKit path against a raw ONNX Runtime call
/// on an identically configured session, in the same process and the same run.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item><c>RawRun</c> (baseline): <c>session.Run</c> with a reused <see cref="RunOptions"/> and a pre-created input
/// <see cref="OrtValue"/>; reads one output value; disposes the outputs. The least a host can do per request.</item>
/// <item><c>InferAsync</c>: <see cref="IInferenceClient.InferAsync(string, InferenceRequest, CancellationToken)"/> awaited,
/// one output value read, response disposed. The request object is reused, so the allocations shown are InferKit's own.</item>
/// <item><c>InferAsync_NewRequest</c>: the same, building the request and its tensor per call, as an application does.</item>
/// <item><c>InferAsync_Metrics</c>: the same as <c>InferAsync</c> on a second, identical model host whose "InferKit" meter has
/// a <see cref="MeterListener"/> with every instrument enabled, recording into a counter (the cost of telemetry, issue 6).</item>
/// </list>
/// </remarks>
[MemoryDiagnoser]
[ThreadingDiagnoser]
public class SingleCallerBenchmarks : IDisposable
{
    private const string ModelName = "mlp";

    private readonly MeasurementSink _sink = new();
    private InferenceSession _session = null!;
    private RunOptions _runOptions = null!;
    private OrtValue[] _rawInputs = null!;
    private string[] _inputNames = null!;
    private string[] _outputNames = null!;
    private ServiceProvider _plainServices = null!;
    private ServiceProvider _meteredServices = null!;
    private IInferenceClient _plainClient = null!;
    private IInferenceClient _meteredClient = null!;
    private MeterListener _listener = null!;
    private InferenceRequest _request = null!;
    private float[] _data = null!;
    private bool _disposed;

    /// <summary>Measurements the listener saw (a check that telemetry was really on).</summary>
    public long MeasurementsSeen => _sink.Count;

    [GlobalSetup]
    public void Setup()
    {
        var mlp = new MlpModel(MlpModel.DefaultInputSize, MlpModel.DefaultHiddenSize, MlpModel.DefaultClasses);
        var bytes = mlp.ToOnnx();
        _data = mlp.CreateInputs(1);

        // InferKit first, so the ONNX Runtime environment is created the way InferKit creates it.
        _plainServices = BuildHost(bytes);
        _plainClient = _plainServices.GetRequiredService<IInferenceClient>();
        _plainServices.GetRequiredService<IModelRegistry>().LoadAllAsync().GetAwaiter().GetResult();

        _meteredServices = BuildHost(bytes);
        var meteredFactory = _meteredServices.GetRequiredService<IMeterFactory>();
        _listener = new MeterListener
        {
            // Only the metered host's meter: both hosts have a meter named "InferKit"; the factory is its scope.
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == InferKitTelemetry.Name && ReferenceEquals(instrument.Meter.Scope, meteredFactory))
                {
                    listener.EnableMeasurementEvents(instrument, _sink);
                }
            },
        };
        _listener.SetMeasurementEventCallback<double>(static (_, value, tags, state) => ((MeasurementSink)state!).Add(value, tags.Length));
        _listener.SetMeasurementEventCallback<long>(static (_, value, tags, state) => ((MeasurementSink)state!).Add(value, tags.Length));
        _listener.SetMeasurementEventCallback<int>(static (_, value, tags, state) => ((MeasurementSink)state!).Add(value, tags.Length));
        _meteredClient = _meteredServices.GetRequiredService<IInferenceClient>();
        _listener.Start();
        _meteredServices.GetRequiredService<IModelRegistry>().LoadAllAsync().GetAwaiter().GetResult();

        // The raw peer: the same model and the same session settings InferKit uses by default.
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL })
        {
            _session = new InferenceSession(bytes, options);
        }

        _runOptions = new RunOptions();
        _rawInputs = [OrtValue.CreateTensorValueFromMemory(_data, [1, mlp.InputSize])];
        _inputNames = [MlpModel.InputName];
        _outputNames = [MlpModel.LogitsName, MlpModel.ProbabilitiesName];

        _request = new InferenceRequest(Tensor.Create(MlpModel.InputName, _data, 1, mlp.InputSize));

        // Same answer from both paths, or the comparison means nothing.
        float raw = RawRun();
        float viaInferKit = InferAsync().AsTask().GetAwaiter().GetResult();
        float metered = InferAsync_Metrics().AsTask().GetAwaiter().GetResult();
        if (Math.Abs(raw - viaInferKit) > 1e-5f || Math.Abs(raw - metered) > 1e-5f)
        {
            throw new InvalidOperationException($"The peers disagree: raw {raw}, InferAsync {viaInferKit}, metered {metered}.");
        }

        if (_sink.Count == 0)
        {
            throw new InvalidOperationException("The MeterListener saw no measurement from the metered host; the telemetry benchmark would measure nothing.");
        }
    }

    [GlobalCleanup]
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        GC.SuppressFinalize(this);
        _listener.Dispose();
        _plainServices.Dispose();
        _meteredServices.Dispose();
        foreach (var v in _rawInputs)
        {
            v.Dispose();
        }

        _runOptions.Dispose();
        _session.Dispose();
    }

    [Benchmark(Baseline = true, Description = "raw session.Run")]
    public float RawRun()
    {
        using var outputs = _session.Run(_runOptions, _inputNames, _rawInputs, _outputNames);
        return outputs[1].GetTensorDataAsSpan<float>()[0];
    }

    [Benchmark(Description = "InferAsync")]
    public async ValueTask<float> InferAsync()
    {
        using var response = await _plainClient.InferAsync(ModelName, _request);
        return response.Outputs[1].GetSpan<float>()[0];
    }

    [Benchmark(Description = "InferAsync, new request per call")]
    public async ValueTask<float> InferAsync_NewRequest()
    {
        var request = new InferenceRequest(Tensor.Create(MlpModel.InputName, _data, 1, MlpModel.DefaultInputSize));
        using var response = await _plainClient.InferAsync(ModelName, request);
        return response.Outputs[1].GetSpan<float>()[0];
    }

    [Benchmark(Description = "InferAsync, MeterListener on")]
    public async ValueTask<float> InferAsync_Metrics()
    {
        using var response = await _meteredClient.InferAsync(ModelName, _request);
        return response.Outputs[1].GetSpan<float>()[0];
    }

    private static ServiceProvider BuildHost(byte[] model)
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddOnnxModel(ModelName, ModelSource.FromBytes(model), o => o.Batching.MaxBatchSize = 64);
        return services.BuildServiceProvider();
    }

    /// <summary>A cheap measurement sink: a count and a running sum, as an exporter's aggregation would keep.</summary>
    private sealed class MeasurementSink
    {
        private long _count;
        private double _sum;
        private long _tags;

        public long Count => Interlocked.Read(ref _count);

        public void Add(double value, int tagCount)
        {
            Interlocked.Increment(ref _count);
            _sum += value;
            _tags += tagCount;
        }
    }
}
