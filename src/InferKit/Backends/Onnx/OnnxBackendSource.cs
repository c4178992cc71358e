using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

namespace InferKit.Backends.Onnx;

/// <summary>Creates the instances of one model; owns what they share (model bytes, pre-packed weights).</summary>
internal interface IBackendSource : IDisposable
{
    /// <summary>"onnxruntime", or a custom backend's platform name.</summary>
    string Platform { get; }

    IModelBackend CreateInstance(ModelInstanceContext context, OnnxSessionSettings settings);
}

/// <summary>The ONNX Runtime source: the model read once, and one pre-packed weights container shared by every instance.</summary>
internal sealed class OnnxBackendSource : IBackendSource
{
    private readonly string _model;
    private readonly OnnxModelData _data;
    private readonly bool? _batching;
    private readonly ILogger _logger;
    private readonly PrePackedWeightsContainer? _weights;
    private readonly int _hostInstances;

    private OnnxBackendSource(string model, OnnxModelData data, bool shareWeights, bool? batching, int hostInstances, ILogger logger)
    {
        _hostInstances = hostInstances;
        _model = model;
        _data = data;
        _batching = batching;
        _logger = SafeLogger.Wrap(logger);
        _weights = shareWeights ? new PrePackedWeightsContainer() : null;
    }

    public string Platform => "onnxruntime";

    // hostInstances: ONNX instances across every model of the host (see OnnxModelBackend.Create).
    public static async Task<OnnxBackendSource> CreateAsync(string model, ModelSource source, OnnxThreadPoolOptions? pool, bool shareWeights, bool? batching, int hostInstances, ILogger logger, CancellationToken cancellationToken)
    {
        OnnxEnvironment.EnsureInitialized(pool);
        OnnxModelData data;
        try
        {
            data = await source.LoadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException(model, $"could not read {source}: {ex.Message}", ex);
        }

        return new OnnxBackendSource(model, data, shareWeights, batching, hostInstances, logger);
    }

    public IModelBackend CreateInstance(ModelInstanceContext context, OnnxSessionSettings settings)
        => OnnxModelBackend.Create(_model, _data, settings, settings.SharePrepackedWeights ? _weights : null, _batching, _hostInstances, _logger);

    public void Dispose() => _weights?.Dispose();
}

/// <summary>A source for user-supplied backends (custom runtimes, fakes in tests).</summary>
internal sealed class DelegateBackendSource(Func<ModelInstanceContext, IModelBackend> factory) : IBackendSource
{
    public string Platform => "custom";

    public IModelBackend CreateInstance(ModelInstanceContext context, OnnxSessionSettings settings)
        => factory(context) ?? throw new InvalidOperationException($"The backend factory for model '{context.ModelName}' returned null.");

    public void Dispose()
    {
    }
}
