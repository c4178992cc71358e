using System.ComponentModel.DataAnnotations;

namespace InferKit.Backends.Onnx;

/// <summary>The execution provider an ONNX Runtime session should run on.</summary>
public enum ExecutionProvider
{
    /// <summary>The CPU provider (always available).</summary>
    Cpu = 0,
    /// <summary>NVIDIA CUDA; needs the Microsoft.ML.OnnxRuntime.Gpu package and CUDA libraries. Falls back to CPU when unavailable.</summary>
    Cuda,
    /// <summary>NVIDIA TensorRT; needs TensorRT libraries. Falls back to CUDA, then CPU, when unavailable.</summary>
    TensorRT,
}

/// <summary>How much ONNX Runtime rewrites the graph at load.</summary>
public enum GraphOptimization
{
    /// <summary>No rewriting.</summary>
    None = 0,
    /// <summary>Constant folding and redundant node removal.</summary>
    Basic,
    /// <summary>Basic plus node fusions.</summary>
    Extended,
    /// <summary>Everything, including layout changes (the default).</summary>
    All,
}

/// <summary>How ONNX Runtime schedules independent nodes of one run.</summary>
public enum GraphExecutionMode
{
    /// <summary>One node at a time, each using the intra-op threads (the default).</summary>
    Sequential = 0,
    /// <summary>Independent branches in parallel on the inter-op threads.</summary>
    Parallel,
}

/// <summary>
/// ONNX Runtime settings for the sessions of one model (or one instance group), in InferKit's own types so a
/// host never needs <c>using Microsoft.ML.OnnxRuntime;</c>.
/// </summary>
public sealed class OnnxSessionSettings
{
    /// <summary>The execution provider asked for.</summary>
    public ExecutionProvider Provider { get; set; } = ExecutionProvider.Cpu;

    /// <summary>The GPU device id for CUDA and TensorRT.</summary>
    [Range(0, 64)]
    public int DeviceId { get; set; }

    /// <summary>When the provider cannot load, serve on CPU (with a warning and a Degraded health status) instead of failing the load.</summary>
    public bool AllowCpuFallback { get; set; } = true;

    /// <summary>
    /// Threads one run may use inside an operator. Null (the default): ONNX Runtime's own default (every physical core)
    /// when the host serves one ONNX instance in all; with several (models or instances), the logical processors divided
    /// among them, at least 1, so their runs together do not ask for more threads than cores. Ignored with a global
    /// thread pool.
    /// </summary>
    [Range(1, 1024)]
    public int? IntraOpThreads { get; set; }

    /// <summary>Threads for running independent nodes in parallel; null for the default. Ignored with a global thread pool.</summary>
    [Range(1, 1024)]
    public int? InterOpThreads { get; set; }

    /// <summary>
    /// Let ONNX Runtime's intra-op threads spin between runs. Spinning saves the threads' wake-up on every run, which
    /// pays when one session has the cores to itself, and costs dearly when several sessions (models, instances) share
    /// them: each one's idle threads burn the cores the others need. Null (the default) decides for you: spin only when
    /// the host serves a single ONNX instance in all. An explicit "session.intra_op.allow_spinning" config entry wins.
    /// </summary>
    public bool? AllowSpinning { get; set; }

    /// <summary>
    /// When the intra-op threads spin, how long an idle one spins before it blocks. ONNX Runtime's own default spins a
    /// fixed, large number of iterations (tens of milliseconds on common CPUs), so under steady load an instance's idle
    /// threads never sleep and take the cores that admission, batching and answering need. A bound keeps the saving
    /// for a thread that is woken again soon (the next batch, the next request of a busy caller) and releases the core
    /// otherwise. Default 200 µs; null keeps ONNX Runtime's unbounded default. An explicit
    /// "session.intra_op.spin_duration_us" config entry wins.
    /// </summary>
    public TimeSpan? SpinDuration { get; set; } = TimeSpan.FromMicroseconds(200);

    /// <summary>The graph optimisation level.</summary>
    public GraphOptimization GraphOptimization { get; set; } = GraphOptimization.All;

    /// <summary>The execution mode.</summary>
    public GraphExecutionMode ExecutionMode { get; set; } = GraphExecutionMode.Sequential;

    /// <summary>Fixes symbolic dimensions by name (for example "sequence" = 128) so the graph can be optimised for them.</summary>
    public IDictionary<string, long> FreeDimensionOverrides { get; } = new Dictionary<string, long>(StringComparer.Ordinal);

    /// <summary>Raw session configuration entries (see ONNX Runtime's onnxruntime_session_options_config_keys.h).</summary>
    public IDictionary<string, string> ConfigEntries { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Share pre-packed weights between the instances of one model, so N instances do not hold N copies.</summary>
    public bool SharePrepackedWeights { get; set; } = true;

    /// <summary>
    /// How many batches one CPU instance runs at once under concurrent load, each on a single thread. Null (the default)
    /// decides: the logical processors divided among the host's ONNX instances (every model's), at least 1 and at most
    /// 4, when <see cref="IntraOpThreads"/> is not set, the CPU provider serves and no process-wide thread pool is used;
    /// otherwise 1. So one model with one instance on 2 cores gets 2 lanes, and two models on 2 cores get none. An
    /// instance's concurrency is the larger of this and its configured <c>MaxConcurrency</c>.
    /// </summary>
    /// <remarks>
    /// ONNX Runtime's intra-op threads cooperate on one run: they wait for each other at every operator and spin while
    /// they wait, so when the process's other threads (admitting, batching and answering requests) need the same cores,
    /// a multi-threaded run loses much of its CPU to waiting. Runs on single-threaded lanes do not wait for anyone.
    /// With lanes, the instance holds a second, single-threaded session of the model (sharing its pre-packed weights
    /// when <see cref="SharePrepackedWeights"/> is on; other initializers and the session's buffers are held twice, so
    /// set 1 where memory is short). A small batch (at most 8 rows) that starts while nothing else runs on the instance
    /// still uses the first session and all its threads: a lone caller keeps the lowest latency. Every other batch runs
    /// on a lane. More lanes split the queue into more, smaller batches, hence the cap of 4 in the default.
    /// </remarks>
    [Range(1, 256)]
    public int? Lanes { get; set; }

    /// <summary>Copies every setting from <paramref name="other"/>.</summary>
    public void CopyFrom(OnnxSessionSettings other)
    {
        ArgumentNullException.ThrowIfNull(other);
        Provider = other.Provider;
        DeviceId = other.DeviceId;
        AllowCpuFallback = other.AllowCpuFallback;
        AllowSpinning = other.AllowSpinning;
        SpinDuration = other.SpinDuration;
        IntraOpThreads = other.IntraOpThreads;
        InterOpThreads = other.InterOpThreads;
        GraphOptimization = other.GraphOptimization;
        ExecutionMode = other.ExecutionMode;
        SharePrepackedWeights = other.SharePrepackedWeights;
        Lanes = other.Lanes;
        FreeDimensionOverrides.Clear();
        foreach (var kv in other.FreeDimensionOverrides)
        {
            FreeDimensionOverrides[kv.Key] = kv.Value;
        }

        ConfigEntries.Clear();
        foreach (var kv in other.ConfigEntries)
        {
            ConfigEntries[kv.Key] = kv.Value;
        }
    }
}

/// <summary>
/// An optional process-wide ONNX Runtime thread pool shared by every session. It must be set up before
/// anything touches ONNX Runtime; InferKit does so before it creates its first session.
/// </summary>
public sealed class OnnxThreadPoolOptions
{
    /// <summary>Intra-op threads in the shared pool; null for ONNX Runtime's default.</summary>
    [Range(1, 1024)]
    public int? IntraOpThreads { get; set; }

    /// <summary>Inter-op threads in the shared pool; null for ONNX Runtime's default.</summary>
    [Range(1, 1024)]
    public int? InterOpThreads { get; set; }

    /// <summary>Let idle pool threads spin (lower latency, more CPU). Default false: a server shares its cores.</summary>
    public bool AllowSpinning { get; set; }
}
