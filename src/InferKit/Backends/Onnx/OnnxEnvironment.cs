using Microsoft.ML.OnnxRuntime;

namespace InferKit.Backends.Onnx;

/// <summary>Creates the ONNX Runtime environment once per process, with the global thread pool when asked.</summary>
internal static class OnnxEnvironment
{
    private static readonly Lock Gate = new();
    private static bool s_initialized;
    private static bool s_globalPool;

    /// <summary>True when sessions must use the global thread pool (DisablePerSessionThreads).</summary>
    public static bool UsesGlobalThreadPool
    {
        get
        {
            lock (Gate)
            {
                return s_globalPool;
            }
        }
    }

    /// <summary>
    /// Sets up the environment. With <paramref name="pool"/>, the global thread pool is created; that is only
    /// possible while nothing else has touched ONNX Runtime in this process.
    /// </summary>
    /// <exception cref="InvalidOperationException">A global pool was asked for but ONNX Runtime was already initialised without one.</exception>
    public static void EnsureInitialized(OnnxThreadPoolOptions? pool)
    {
        lock (Gate)
        {
            if (s_initialized)
            {
                if (pool is not null && !s_globalPool)
                {
                    throw new InvalidOperationException("A global ONNX Runtime thread pool was configured, but ONNX Runtime was already initialised in this process without one. Configure InferKit's thread pool before any other code creates an ONNX Runtime object (SessionOptions, InferenceSession, OrtValue).");
                }

                return;
            }

            if (pool is null)
            {
                _ = OrtEnv.Instance();
                s_initialized = true;
                return;
            }

            if (OrtEnv.IsCreated)
            {
                throw new InvalidOperationException("A global ONNX Runtime thread pool was configured, but ONNX Runtime was already initialised in this process. Configure InferKit's thread pool before any other code creates an ONNX Runtime object (SessionOptions, InferenceSession, OrtValue).");
            }

            using var threading = new OrtThreadingOptions();
            if (pool.IntraOpThreads is int intra)
            {
                threading.GlobalIntraOpNumThreads = intra;
            }

            if (pool.InterOpThreads is int inter)
            {
                threading.GlobalInterOpNumThreads = inter;
            }

            threading.GlobalSpinControl = pool.AllowSpinning;
            var options = new EnvironmentCreationOptions { threadOptions = threading, logId = "InferKit" };
            _ = OrtEnv.CreateInstanceWithOptions(ref options);
            s_initialized = true;
            s_globalPool = true;
        }
    }
}
