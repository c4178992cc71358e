using InferKit.Backends.Onnx;

namespace InferKit.DependencyInjection;

/// <summary>Process-wide InferKit settings.</summary>
public sealed class InferKitOptions
{
    /// <summary>A process-wide ONNX Runtime thread pool shared by every session; null (the default) gives each session its own threads.</summary>
    public OnnxThreadPoolOptions? OnnxThreadPool { get; set; }

    /// <summary>Load every model when the host starts (the default). Without a host, models load on first use or through <see cref="Models.IModelRegistry.LoadAllAsync"/>.</summary>
    public bool LoadModelsOnStart { get; set; } = true;

    /// <summary>
    /// How long stopping the host waits for accepted requests to finish before the instances are disposed. It bounds the
    /// whole shutdown: disposing the host (or the registry) after a drain waits only for what is left of it, and what still
    /// runs then is disposed in the background once its batch ends.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>A seed for the randomness load balancing uses, for reproducible runs; null for a shared random source.</summary>
    public int? RandomSeed { get; set; }
}
