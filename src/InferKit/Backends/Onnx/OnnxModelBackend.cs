using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.InteropServices;
using InferKit.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using OrtElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace InferKit.Backends.Onnx;

/// <summary>
/// One ONNX Runtime session. Every ONNX Runtime object it creates (session options, session, run options,
/// input and output values) is created, used and disposed here; outputs leave only as spans handed to the
/// sink while the output values are still alive. <see cref="Dispose"/> may be called while runs are in flight: the
/// sessions and run contexts are then released by the last run to leave, never under a run.
/// </summary>
internal sealed class OnnxModelBackend : IModelBackend
{
    private const string SpinningKey = "session.intra_op.allow_spinning";
    private const string SpinDurationKey = "session.intra_op.spin_duration_us";
    private static int s_liveSessions;

    /// <summary>A batch of at most this many rows that starts while nothing else runs here uses the main session.</summary>
    internal const int LoneRunMaxRows = 8;

    /// <summary>At most this many lanes by default: more lanes split the queue into more, smaller batches.</summary>
    internal const int DefaultMaxLanes = 4;

    private readonly InferenceSession _session;

    /// <summary>The single-threaded session the lanes run on (the main session itself when that is single-threaded), or null.</summary>
    private readonly InferenceSession? _lane;
    private int _running;
    private long _lastLoad;
    private long _loadMemory = System.Diagnostics.Stopwatch.Frequency / 500; // 2 ms
    private long _mainRuns;
    private long _laneRuns;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;

    /// <summary>Each output's shape for a run, -1 standing for the run's rows; null when some output's shape cannot be known before the run.</summary>
    private readonly long[][]? _outputPlan;

    /// <summary>Each input's shape for a run, as <see cref="_outputPlan"/>; null when some input's shape is not fixed.</summary>
    private readonly long[][]? _inputPlan;

    /// <summary>Whether runs write their outputs into buffers of their own: <see cref="Unverified"/> until one run checked the plan.</summary>
    private int _preallocate;
    private const int Unplanned = 0;
    private const int Planned = 1;
    private const int Unverified = 2;
    private long _preallocatedRuns;
    private readonly ConcurrentBag<RunContext> _contexts = new();
    private int _disposed;

    /// <summary>Runs inside <see cref="RunEntered"/>, plus runs that counted themselves in and are backing out.</summary>
    private int _inFlight;

    /// <summary>1 once the sessions and pooled contexts are released (see <see cref="Release"/>).</summary>
    private int _released;

    private OnnxModelBackend(InferenceSession session, InferenceSession? lane, int lanes, ModelSignature signature, ExecutionProviderInfo provider)
    {
        _session = session;
        _lane = lane;
        Lanes = lanes;
        Signature = signature;
        Provider = provider;
        _inputNames = signature.Inputs.Select(static i => i.Name).ToArray();
        _outputNames = signature.Outputs.Select(static o => o.Name).ToArray();
        _outputPlan = PlanOutputs(signature);
        _inputPlan = PlanInputs(signature);
        _preallocate = _outputPlan is null ? Unplanned : Unverified;
        Interlocked.Increment(ref s_liveSessions);
    }

    /// <summary>Sessions created and not yet disposed, process-wide (for leak tests and diagnostics).</summary>
    internal static int LiveSessions => Volatile.Read(ref s_liveSessions);

    public ModelSignature Signature { get; }

    public ExecutionProviderInfo Provider { get; }

    /// <summary>How many batches this instance runs at once under load (see <see cref="OnnxSessionSettings.Lanes"/>).</summary>
    public int Lanes { get; }

    /// <summary>Runs on the main session so far (diagnostics and tests).</summary>
    internal long MainRuns => Volatile.Read(ref _mainRuns);

    /// <summary>Runs on the single-threaded lane session so far (diagnostics and tests).</summary>
    internal long LaneRuns => Volatile.Read(ref _laneRuns);

    /// <summary>Runs whose outputs ONNX Runtime wrote into this backend's own buffers (diagnostics and tests).</summary>
    internal long PreallocatedRuns => Volatile.Read(ref _preallocatedRuns);

    /// <summary>
    /// True from the moment the sessions and pooled run contexts start being released: at <see cref="Dispose"/>, or after it
    /// when the last run in flight leaves (diagnostics and tests).
    /// </summary>
    internal bool SessionsReleased => Volatile.Read(ref _released) != 0;

    /// <summary>Run contexts waiting in the pool for the next run (diagnostics and tests).</summary>
    internal int PooledContexts => _contexts.Count;

    /// <summary>True while runs write their outputs into this backend's own buffers (see <see cref="PlanOutputs"/>).</summary>
    internal bool PreallocatesOutputs => Volatile.Read(ref _preallocate) == Planned;

    /// <summary>
    /// Each output's shape for a run when the signature fixes it: every dimension fixed, or, for a batchable model, the first
    /// one dynamic (the run's rows, written -1) and the rest fixed. Null when any output is a string tensor or has another
    /// dynamic dimension. Runs can then hand ONNX Runtime output buffers of their own instead of having it allocate each
    /// output and describe it back, which costs several microseconds per run. A plan is only a prediction: the first run
    /// checks it (see <see cref="VerifyPlan"/>), and ONNX Runtime checks every output's shape against the buffer it is
    /// given and fails the run on a mismatch, which drops the plan.
    /// </summary>
    internal static long[][]? PlanOutputs(ModelSignature signature) => PlanShapes(signature.Outputs, signature.IsBatchable);

    /// <summary>
    /// Each input's shape when the signature fixes it, as for outputs (see <see cref="PlanOutputs"/>). Such inputs are
    /// copied into buffers of the backend's own, over which the input values are kept per row count, instead of being
    /// pinned and wrapped for every run.
    /// </summary>
    internal static long[][]? PlanInputs(ModelSignature signature) => PlanShapes(signature.Inputs, signature.IsBatchable);

    private static long[][]? PlanShapes(IReadOnlyList<TensorSpec> specs, bool batchable)
    {
        if (specs.Count == 0)
        {
            return null;
        }

        var plan = new long[specs.Count][];
        for (int o = 0; o < plan.Length; o++)
        {
            var spec = specs[o];
            if (spec.ElementType.SizeOf() == 0)
            {
                return null;
            }

            var dims = spec.Shape.ToArray();
            for (int d = 0; d < dims.Length; d++)
            {
                if (dims[d] < 0 && !(d == 0 && batchable))
                {
                    return null;
                }
            }

            plan[o] = dims;
        }

        return plan;
    }

    /// <summary>
    /// The lane count <paramref name="settings"/> asks for on <paramref name="serving"/> (see <see cref="OnnxSessionSettings.Lanes"/>):
    /// by default the processors shared among the host's ONNX instances, so lanes never ask for more threads than cores.
    /// </summary>
    internal static int ResolveLanes(OnnxSessionSettings settings, string serving, bool globalThreadPool, int processors, int hostInstances)
    {
        if (serving != "CPU" || globalThreadPool)
        {
            return 1;
        }

        if (settings.Lanes is int lanes)
        {
            return lanes;
        }

        return settings.IntraOpThreads is null ? Math.Min(CoreShare(processors, hostInstances), DefaultMaxLanes) : 1;
    }

    /// <summary>
    /// The intra-op threads of the main session: as set; else, when several ONNX instances share the host, the processors
    /// divided among them (at least 1), so their runs together do not ask for more threads than cores; else null
    /// (ONNX Runtime's default, every physical core). Ignored with the process-wide pool.
    /// </summary>
    internal static int? IntraOpThreadsFor(OnnxSessionSettings settings, bool globalThreadPool, int processors, int hostInstances)
    {
        if (globalThreadPool)
        {
            return null;
        }

        if (settings.IntraOpThreads is int set)
        {
            return set;
        }

        return hostInstances > 1 ? CoreShare(processors, hostInstances) : null;
    }

    /// <summary>The processors each of the host's ONNX instances gets when they are shared out: at least 1.</summary>
    private static int CoreShare(int processors, int hostInstances) => Math.Max(1, processors / Math.Max(1, hostInstances));

    /// <summary>True when a run of <paramref name="rows"/> rows, with <paramref name="inFlight"/> runs here counting itself, belongs on the main session.</summary>
    internal static bool UsesMainSession(int rows, int inFlight) => inFlight == 1 && rows <= LoneRunMaxRows;

    /// <summary>
    /// How long after a run that showed load (another run in flight, or more rows than a lone caller sends) small runs
    /// still take a lane: under load a batch can find the instance momentarily idle, and waking the multi-threaded
    /// session then leaves its threads spinning beside the lanes.
    /// </summary>
    internal TimeSpan LoadMemory
    {
        get => TimeSpan.FromSeconds(_loadMemory / (double)System.Diagnostics.Stopwatch.Frequency);
        set => _loadMemory = (long)(value.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
    }

    /// <summary>Creates a session from model bytes or a path, applying the settings and falling back to CPU when the provider cannot load.</summary>
    // hostInstances: ONNX instances across every model of the host. Spinning intra-op threads pay only when there is
    // one, and the default intra-op threads and lanes share the cores among them.
    internal static OnnxModelBackend Create(string modelName, OnnxModelData data, OnnxSessionSettings settings, PrePackedWeightsContainer? weights, bool? batchingEnabled, int hostInstances, ILogger logger)
    {
        bool spinByDefault = hostInstances == 1;
        var requested = ProviderName(settings.Provider);
        int? intraOp = IntraOpThreadsFor(settings, OnnxEnvironment.UsesGlobalThreadPool, Environment.ProcessorCount, hostInstances);
        string? fallbackReason = null;
        InferenceSession? session = null;
        string serving = requested;

        if (settings.Provider != ExecutionProvider.Cpu)
        {
            try
            {
                session = CreateSession(data, settings, settings.Provider, weights, spinByDefault, intraOp);
            }
            catch (Exception ex) when (ex is EntryPointNotFoundException or OnnxRuntimeException or DllNotFoundException)
            {
                fallbackReason = $"{requested} (device {settings.DeviceId}) could not load: {ex.GetType().Name}: {FirstLine(ex.Message)}";
                if (!settings.AllowCpuFallback)
                {
                    throw new ModelLoadException(modelName, fallbackReason + ". CPU fallback is switched off (AllowCpuFallback = false).", ex);
                }

                InferKit.Telemetry.Log.ProviderFallback(logger, modelName, requested, settings.DeviceId, fallbackReason);
                serving = "CPU";
            }
        }

        try
        {
            session ??= CreateSession(data, settings, ExecutionProvider.Cpu, weights, spinByDefault, intraOp);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new ModelLoadException(modelName, FirstLine(ex.Message), ex);
        }

        InferenceSession? lane = null;
        try
        {
            var signature = ReadSignature(modelName, session);
            if (batchingEnabled == false)
            {
                signature = signature.WithoutBatching();
            }

            int lanes = ResolveLanes(settings, serving, OnnxEnvironment.UsesGlobalThreadPool, Environment.ProcessorCount, hostInstances);
            if (lanes > 1)
            {
                // Concurrent runs of one session are safe; a main session that already runs on one thread is the lane.
                lane = intraOp == 1 ? session : CreateSession(data, settings, ExecutionProvider.Cpu, weights, spinByDefault, 1);
            }

            return new OnnxModelBackend(session, lane, lanes, signature, new ExecutionProviderInfo(serving, requested, settings.DeviceId, fallbackReason));
        }
        catch (OnnxRuntimeException ex)
        {
            DisposeSessions(session, lane);
            throw new ModelLoadException(modelName, FirstLine(ex.Message), ex);
        }
        catch
        {
            DisposeSessions(session, lane);
            throw;
        }
    }

    public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        if (inputs.Length != _inputNames.Length)
        {
            throw new ArgumentException($"Expected {_inputNames.Length} inputs, got {inputs.Length}.", nameof(inputs));
        }

        // Count in, then check the flag again (Dispose sets the flag, then reads the count; both steps are full fences):
        // either Dispose sees this run and leaves the release to the last run out, or this run sees the flag and backs
        // out before it touches a session or a pooled context.
        Interlocked.Increment(ref _inFlight);
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            RunEntered(inputs, sink, cancellationToken);
        }
        finally
        {
            if (Interlocked.Decrement(ref _inFlight) == 0 && Volatile.Read(ref _disposed) != 0)
            {
                Release();
            }
        }
    }

    /// <summary>Tests only: called on the run's thread after it chose its session and before it runs it.</summary>
    internal Action? AfterSessionChosen { get; set; }

    /// <summary>The body of <see cref="Run"/>, counted in <see cref="_inFlight"/>: the sessions and pooled contexts stay alive throughout.</summary>
    private void RunEntered(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
    {
        // Per-run native objects and arrays come from a small pool: one context per concurrent run.
        if (!_contexts.TryTake(out var context))
        {
            context = new RunContext(inputs.Length, _outputNames.Length);
        }

        long rows = Signature.IsBatchable && inputs.Length > 0 && inputs[0].Shape.Length > 0 ? inputs[0].Shape[0] : 1;
        var values = context.Values;
        var handles = context.Handles;
        var runOptions = context.Options;
        CancellationTokenRegistration registration = default;
        bool terminated = false;
        InferenceSession session;
        try
        {
            // First in the try: the finally below releases what this counts.
            session = ChooseSession(rows);
            AfterSessionChosen?.Invoke();
            var kept = KeptInputs(context, inputs, rows);
            if (kept is null)
            {
                for (int i = 0; i < inputs.Length; i++)
                {
                    values[i] = CreateInput(inputs[i], ref handles[i], ref context.Shapes[i]);
                }
            }
            else
            {
                values = kept;
            }

            if (cancellationToken.CanBeCanceled)
            {
                registration = cancellationToken.UnsafeRegister(static s => ((RunOptions)s!).Terminate = true, runOptions);
            }

            int plan = _outputPlan is null ? Unplanned : Volatile.Read(ref _preallocate);
            if (plan == Planned && PrepareOutputs(context, rows))
            {
                OnnxRuntimeException? refused;
                try
                {
                    refused = RunIntoBuffers(session, context, values, sink, cancellationToken);
                }
                catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
                {
                    terminated = true;
                    throw new OperationCanceledException("The run was cancelled.", cancellationToken);
                }

                if (refused is null)
                {
                    Interlocked.Increment(ref _preallocatedRuns);
                    return;
                }

                // ONNX Runtime refused the buffers (an output's shape differs from the plan), or the run failed for
                // another reason. Run again letting ONNX Runtime allocate: if that succeeds, the plan does not hold for
                // this model and is dropped for good; if it fails too, its error is the run's error.
                RunAllocating(session, values, runOptions, sink, null, 0, ref terminated, cancellationToken);
                Volatile.Write(ref _preallocate, Unplanned);
                return;
            }

            RunAllocating(session, values, runOptions, sink, plan == Unverified ? context : null, rows, ref terminated, cancellationToken);
        }
        finally
        {
            if (_lane is not null)
            {
                Interlocked.Decrement(ref _running);
            }

            registration.Dispose();
            terminated |= runOptions.Terminate;
            for (int i = 0; i < context.Values.Length; i++)
            {
                context.Values[i]?.Dispose();
                context.Values[i] = null!;
                if (handles[i].IsAllocated)
                {
                    handles[i].Free();
                }

                handles[i] = default;
            }

            if (terminated)
            {
                context.Dispose();
            }
            else
            {
                ReturnContext(context);
            }
        }
    }

    /// <summary>
    /// Tests only: called on the run's thread with its context after the run checked that the backend is not disposed and
    /// before the context goes back to the pool, where a concurrent <see cref="Dispose"/> can land.
    /// </summary>
    internal Action<RunContext>? BeforeContextPooled { get; set; }

    /// <summary>
    /// Hands a run's context back to the pool, or disposes it once the backend is disposed. <see cref="Dispose"/> can land
    /// between the check and the add; the pool is then emptied by <see cref="Release"/>, which runs only after this run
    /// left (it is still counted in <see cref="_inFlight"/> here), so the context cannot stay in a disposed backend's pool.
    /// </summary>
    private void ReturnContext(RunContext context)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            context.Dispose();
            return;
        }

        BeforeContextPooled?.Invoke(context);
        _contexts.Add(context);
    }

    /// <summary>Disposes every context in the pool (each is no longer used by any run).</summary>
    private void DisposePooledContexts()
    {
        while (_contexts.TryTake(out var context))
        {
            context.Dispose();
        }
    }

    // verify: a context to check the output plan with, once the caller has its answer (null: no check).
    private void RunAllocating(InferenceSession session, OrtValue[] values, RunOptions runOptions, IBackendOutputSink sink, RunContext? verify, long rows,
        ref bool terminated, CancellationToken cancellationToken)
    {
        IDisposableReadOnlyCollection<OrtValue> outputs;
        try
        {
            outputs = session.Run(runOptions, _inputNames, values, _outputNames);
        }
        catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
        {
            terminated = true;
            throw new OperationCanceledException("The run was cancelled.", cancellationToken);
        }

        using (outputs)
        {
            for (int o = 0; o < outputs.Count; o++)
            {
                var value = outputs[o];
                var info = value.GetTensorTypeAndShape();
                var shape = info.Shape;
                if (info.ElementDataType == OrtElementType.String)
                {
                    sink.OnStringOutput(o, shape, value.GetStringTensorAsArray());
                }
                else
                {
                    sink.OnOutput(o, FromOrt(info.ElementDataType), shape, value.GetTensorMutableRawData());
                }
            }

            if (verify is not null)
            {
                VerifyPlan(session, verify, values, rows, outputs, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Checks the output plan once, on a run that already has its answer: the same inputs run again into the context's
    /// buffers (first filled with a marker, so an output ONNX Runtime did not write cannot pass) must give the same shapes
    /// and bytes. The plan is used from then on if they do, and never again if they do not (or ONNX Runtime refuses the
    /// buffers); a model whose outputs vary from run to run with the same inputs therefore keeps allocating.
    /// </summary>
    private void VerifyPlan(InferenceSession session, RunContext context, OrtValue[] inputs, long rows, IReadOnlyList<OrtValue> allocated, CancellationToken cancellationToken)
    {
        if (!PrepareOutputs(context, rows))
        {
            return; // too large to keep: a later run checks
        }

        for (int o = 0; o < allocated.Count; o++)
        {
            context.OutputBuffers[o].AsSpan(0, context.OutputBytes[o]).Fill(0xA5);
        }

        OnnxRuntimeException? refused;
        try
        {
            refused = RunIntoBuffers(session, context, inputs, null, cancellationToken);
        }
        catch (OnnxRuntimeException)
        {
            return; // cancelled: a later run checks
        }

        bool same = refused is null;
        for (int o = 0; same && o < allocated.Count; o++)
        {
            var info = allocated[o].GetTensorTypeAndShape();
            same = info.Shape.AsSpan().SequenceEqual(context.OutputShapes[o])
                && allocated[o].GetTensorMutableRawData().SequenceEqual(context.OutputBuffers[o].AsSpan(0, context.OutputBytes[o]));
        }

        Interlocked.CompareExchange(ref _preallocate, same ? Planned : Unplanned, Unverified);
    }

    /// <summary>
    /// Sizes the context's output buffers and shapes for this run from the plan; false (ONNX Runtime allocates instead)
    /// when an output would be larger than a context keeps.
    /// </summary>
    private bool PrepareOutputs(RunContext context, long rows)
    {
        var plan = _outputPlan!;
        for (int o = 0; o < plan.Length; o++)
        {
            var dims = plan[o];
            ref var shape = ref context.OutputShapes[o];
            if (shape is null || shape.Length != dims.Length)
            {
                shape = new long[dims.Length];
            }

            long elements = 1;
            for (int d = 0; d < dims.Length; d++)
            {
                shape[d] = dims[d] < 0 ? rows : dims[d];
                elements *= shape[d];
            }

            long bytes = elements * Signature.Outputs[o].ElementType.SizeOf();
            if (bytes > RunContext.MaxOutputBytes)
            {
                return false;
            }

            RunContext.EnsureBuffer(ref context.OutputBuffers[o], (int)bytes, RunContext.MaxOutputBytes, context.OutputValueCache);

            context.OutputBytes[o] = (int)bytes;
        }

        context.OutputRows = rows;
        return true;
    }

    /// <summary>
    /// The run's inputs copied into the context's own buffers, under the values kept over them for this row count (created
    /// the first time); null when the plan does not fix the inputs' shapes, a tensor's shape differs from it, or the
    /// inputs are too large to keep (then each run pins and wraps them).
    /// </summary>
    private OrtValue[]? KeptInputs(RunContext context, ReadOnlySpan<Tensor> inputs, long rows)
    {
        var plan = _inputPlan;
        if (plan is null || inputs.Length != plan.Length)
        {
            return null;
        }

        long total = 0;
        for (int i = 0; i < plan.Length; i++)
        {
            var shape = inputs[i].Shape;
            if (shape.Length != plan[i].Length || inputs[i].ElementType != Signature.Inputs[i].ElementType || inputs[i].DataObject is not Array)
            {
                return null;
            }

            for (int d = 0; d < shape.Length; d++)
            {
                if (shape[d] != (plan[i][d] < 0 ? rows : plan[i][d]))
                {
                    return null;
                }
            }

            int bytes = inputs[i].RawBytes.Length;
            if (bytes == 0)
            {
                return null;
            }

            total += bytes;
        }

        if (total > RunContext.MaxKeptInputBytes)
        {
            return null;
        }

        for (int i = 0; i < plan.Length; i++)
        {
            RunContext.EnsureBuffer(ref context.InputBuffers[i], inputs[i].RawBytes.Length, RunContext.MaxKeptInputBytes, context.InputValueCache);
        }

        if (!context.InputValueCache.TryGetValue(rows, out var values))
        {
            if (context.InputValueCache.Count >= RunContext.MaxKeptShapes)
            {
                return null;
            }

            var shapes = new long[plan.Length][];
            var sizes = new int[plan.Length];
            for (int i = 0; i < plan.Length; i++)
            {
                shapes[i] = inputs[i].Shape.ToArray();
                sizes[i] = inputs[i].RawBytes.Length;
            }

            values = ValuesOver(context.InputBuffers, Signature.Inputs, shapes, sizes);
            context.InputValueCache.Add(rows, values);
        }

        for (int i = 0; i < plan.Length; i++)
        {
            inputs[i].RawBytes.CopyTo(context.InputBuffers[i]);
        }

        return values;
    }

    /// <summary>One value over each pinned buffer, with the given shape and size (ONNX Runtime copies the shape).</summary>
    private static unsafe OrtValue[] ValuesOver(byte[][] buffers, IReadOnlyList<TensorSpec> specs, long[][] shapes, int[] sizes)
    {
        var values = new OrtValue[buffers.Length];
        try
        {
            for (int i = 0; i < values.Length; i++)
            {
                fixed (byte* p = buffers[i])
                {
                    // The buffer lives on the pinned object heap: the pointer stays valid after this block.
                    values[i] = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, ToOrt(specs[i].ElementType), shapes[i], (IntPtr)p, sizes[i]);
                }
            }
        }
        catch
        {
            RunContext.DisposeAll(values);
            throw;
        }

        return values;
    }

    /// <summary>The output values over the context's buffers for this run's shapes: kept per row count, created once.</summary>
    private OrtValue[] OutputValues(RunContext context, out bool kept)
    {
        if (context.OutputValueCache.TryGetValue(context.OutputRows, out var values))
        {
            kept = true;
            return values;
        }

        values = ValuesOver(context.OutputBuffers, Signature.Outputs, context.OutputShapes, context.OutputBytes);
        kept = context.OutputValueCache.Count < RunContext.MaxKeptShapes;
        if (kept)
        {
            context.OutputValueCache.Add(context.OutputRows, values);
        }

        return values;
    }

    /// <summary>Runs with the context's own output buffers; returns ONNX Runtime's error instead of throwing it, so the caller can retry.</summary>
    // sink: null for a check run, whose outputs stay in the buffers.
    private OnnxRuntimeException? RunIntoBuffers(InferenceSession session, RunContext context, OrtValue[] inputs, IBackendOutputSink? sink, CancellationToken cancellationToken)
    {
        var outputs = OutputValues(context, out bool kept);
        try
        {
            try
            {
                session.Run(context.Options, _inputNames, inputs, _outputNames, outputs);
            }
            catch (OnnxRuntimeException ex) when (!cancellationToken.IsCancellationRequested)
            {
                return ex;
            }

            for (int o = 0; sink is not null && o < outputs.Length; o++)
            {
                sink.OnOutput(o, Signature.Outputs[o].ElementType, context.OutputShapes[o], context.OutputBuffers[o].AsSpan(0, context.OutputBytes[o]));
            }

            return null;
        }
        finally
        {
            if (!kept)
            {
                RunContext.DisposeAll(outputs);
            }
        }
    }

    /// <summary>
    /// Refuses new runs and releases the sessions and pooled contexts: now when no run is in flight, else when the last
    /// one leaves (on its thread). Never waits for a run.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // A run counted in after this read sees the flag and backs out without touching the sessions.
        if (Volatile.Read(ref _inFlight) == 0)
        {
            Release();
        }
    }

    /// <summary>
    /// Releases the sessions and pooled contexts once, whoever gets here first: <see cref="Dispose"/> with no run in flight,
    /// or the run that leaves last after it. The live-session count drops only after the native sessions are released.
    /// </summary>
    private void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            return;
        }

        DisposeSessions(_session, _lane);
        DisposePooledContexts();
        Interlocked.Decrement(ref s_liveSessions);
    }

    /// <summary>
    /// The main session for a small batch that runs alone here, with no sign of load in the last <see cref="LoadMemory"/>
    /// (all its threads, lowest latency); else the lane.
    /// </summary>
    private InferenceSession ChooseSession(long rows)
    {
        if (_lane is null)
        {
            return _session;
        }

        int inFlight = Interlocked.Increment(ref _running);
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        if (UsesMainSession((int)Math.Min(rows, int.MaxValue), inFlight))
        {
            if (now - Volatile.Read(ref _lastLoad) >= _loadMemory)
            {
                Interlocked.Increment(ref _mainRuns);
                return _session;
            }
        }
        else
        {
            Volatile.Write(ref _lastLoad, now);
        }

        Interlocked.Increment(ref _laneRuns);
        return _lane;
    }

    private static void DisposeSessions(InferenceSession session, InferenceSession? lane)
    {
        if (lane is not null && !ReferenceEquals(lane, session))
        {
            lane.Dispose();
        }

        session.Dispose();
    }

    private static unsafe OrtValue CreateInput(in Tensor tensor, ref GCHandle handle, ref long[] shape)
    {
        // ONNX Runtime copies the dimensions when it creates the value, so one buffer per input serves every run.
        var dims = tensor.Shape;
        if (shape is null || shape.Length != dims.Length)
        {
            shape = new long[dims.Length];
        }

        dims.CopyTo(shape);
        if (tensor.ElementType == TensorElementType.String)
        {
            var strings = tensor.GetStrings();
            var value = OrtValue.CreateTensorWithEmptyStrings(OrtAllocator.DefaultInstance, shape);
            try
            {
                for (int i = 0; i < strings.Length; i++)
                {
                    value.StringTensorSetElementAt(strings[i].AsSpan(), i);
                }
            }
            catch
            {
                value.Dispose();
                throw;
            }

            return value;
        }

        var bytes = tensor.RawBytes;
        if (tensor.DataObject is not Array array || bytes.IsEmpty)
        {
            // Zero elements: give ONNX Runtime a valid pointer to a small pinned buffer.
            return OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, ToOrt(tensor.ElementType), shape);
        }

        handle = GCHandle.Alloc(array, GCHandleType.Pinned);
        fixed (byte* p = bytes)
        {
            // The array is pinned by the handle for the whole run; the pointer stays valid after this block.
            return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, ToOrt(tensor.ElementType), shape, (IntPtr)p, bytes.Length);
        }
    }

    // intraOp: intra-op threads, null for ONNX Runtime's default; 1 makes a lane (the calling thread does all the work).
    private static InferenceSession CreateSession(OnnxModelData data, OnnxSessionSettings settings, ExecutionProvider provider, PrePackedWeightsContainer? weights, bool spinByDefault, int? intraOp)
    {
        using var options = new SessionOptions();
        if (OnnxEnvironment.UsesGlobalThreadPool)
        {
            options.DisablePerSessionThreads();
        }
        else
        {
            if (intraOp is int intra)
            {
                // With 1, ONNX Runtime creates no pool threads to wait or spin.
                options.IntraOpNumThreads = intra;
            }

            if (settings.InterOpThreads is int inter)
            {
                options.InterOpNumThreads = inter;
            }
        }

        options.GraphOptimizationLevel = settings.GraphOptimization switch
        {
            GraphOptimization.None => GraphOptimizationLevel.ORT_DISABLE_ALL,
            GraphOptimization.Basic => GraphOptimizationLevel.ORT_ENABLE_BASIC,
            GraphOptimization.Extended => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            _ => GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        options.ExecutionMode = settings.ExecutionMode == GraphExecutionMode.Parallel ? ExecutionMode.ORT_PARALLEL : ExecutionMode.ORT_SEQUENTIAL;
        foreach (var kv in settings.FreeDimensionOverrides)
        {
            options.AddFreeDimensionOverrideByName(kv.Key, kv.Value);
        }

        foreach (var kv in settings.ConfigEntries)
        {
            options.AddSessionConfigEntry(kv.Key, kv.Value);
        }

        if (!OnnxEnvironment.UsesGlobalThreadPool && !settings.ConfigEntries.ContainsKey(SpinningKey))
        {
            options.AddSessionConfigEntry(SpinningKey, settings.AllowSpinning ?? spinByDefault ? "1" : "0");
        }

        if (!OnnxEnvironment.UsesGlobalThreadPool && settings.SpinDuration is TimeSpan spin && !settings.ConfigEntries.ContainsKey(SpinDurationKey))
        {
            options.AddSessionConfigEntry(SpinDurationKey, ((long)Math.Max(1, Math.Round(spin.TotalMicroseconds))).ToString(CultureInfo.InvariantCulture));
        }

        switch (provider)
        {
            case ExecutionProvider.Cuda:
                options.AppendExecutionProvider_CUDA(settings.DeviceId);
                break;
            case ExecutionProvider.TensorRT:
                options.AppendExecutionProvider_Tensorrt(settings.DeviceId);
                options.AppendExecutionProvider_CUDA(settings.DeviceId);
                break;
        }

        if (weights is null)
        {
            return data.Path is not null ? new InferenceSession(data.Path, options) : new InferenceSession(data.Bytes!, options);
        }

        return data.Path is not null ? new InferenceSession(data.Path, options, weights) : new InferenceSession(data.Bytes!, options, weights);
    }

    private static ModelSignature ReadSignature(string modelName, InferenceSession session)
    {
        var inputs = new List<TensorSpec>();
        foreach (var name in session.InputNames)
        {
            inputs.Add(ToSpec(modelName, "input", name, session.InputMetadata[name]));
        }

        var outputs = new List<TensorSpec>();
        foreach (var name in session.OutputNames)
        {
            outputs.Add(ToSpec(modelName, "output", name, session.OutputMetadata[name]));
        }

        return new ModelSignature(inputs, outputs);
    }

    private static TensorSpec ToSpec(string modelName, string kind, string name, NodeMetadata meta)
    {
        if (!meta.IsTensor)
        {
            throw new ModelLoadException(modelName, $"{kind} '{name}' is a {meta.OnnxValueType}; InferKit serves tensor inputs and outputs only.");
        }

        var type = FromOrt(meta.ElementDataType);
        if (type == TensorElementType.Undefined)
        {
            throw new ModelLoadException(modelName, $"{kind} '{name}' has element type {meta.ElementDataType}, which InferKit does not support.");
        }

        var dims = meta.Dimensions.Select(static d => d < 0 ? -1L : d).ToArray();
        return new TensorSpec(name, type, dims, meta.SymbolicDimensions);
    }

    internal static OrtElementType ToOrt(TensorElementType type) => type switch
    {
        TensorElementType.Float32 => OrtElementType.Float,
        TensorElementType.Float16 => OrtElementType.Float16,
        TensorElementType.BFloat16 => OrtElementType.BFloat16,
        TensorElementType.Float64 => OrtElementType.Double,
        TensorElementType.Int8 => OrtElementType.Int8,
        TensorElementType.Int16 => OrtElementType.Int16,
        TensorElementType.Int32 => OrtElementType.Int32,
        TensorElementType.Int64 => OrtElementType.Int64,
        TensorElementType.UInt8 => OrtElementType.UInt8,
        TensorElementType.UInt16 => OrtElementType.UInt16,
        TensorElementType.UInt32 => OrtElementType.UInt32,
        TensorElementType.UInt64 => OrtElementType.UInt64,
        TensorElementType.Bool => OrtElementType.Bool,
        TensorElementType.String => OrtElementType.String,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unsupported element type."),
    };

    internal static TensorElementType FromOrt(OrtElementType type) => type switch
    {
        OrtElementType.Float => TensorElementType.Float32,
        OrtElementType.Float16 => TensorElementType.Float16,
        OrtElementType.BFloat16 => TensorElementType.BFloat16,
        OrtElementType.Double => TensorElementType.Float64,
        OrtElementType.Int8 => TensorElementType.Int8,
        OrtElementType.Int16 => TensorElementType.Int16,
        OrtElementType.Int32 => TensorElementType.Int32,
        OrtElementType.Int64 => TensorElementType.Int64,
        OrtElementType.UInt8 => TensorElementType.UInt8,
        OrtElementType.UInt16 => TensorElementType.UInt16,
        OrtElementType.UInt32 => TensorElementType.UInt32,
        OrtElementType.UInt64 => TensorElementType.UInt64,
        OrtElementType.Bool => TensorElementType.Bool,
        OrtElementType.String => TensorElementType.String,
        _ => TensorElementType.Undefined,
    };

    private static string ProviderName(ExecutionProvider provider) => provider switch
    {
        ExecutionProvider.Cuda => "CUDA",
        ExecutionProvider.TensorRT => "TensorRT",
        _ => "CPU",
    };

    private static string FirstLine(string message)
    {
        int nl = message.IndexOf('\n', StringComparison.Ordinal);
        return nl < 0 ? message : message[..nl].TrimEnd();
    }
}

/// <summary>
/// What one run needs besides its inputs: run options (for cancellation), reusable arrays, and output buffers with the
/// output values over them. Used by one run at a time.
/// </summary>
internal sealed class RunContext(int inputs, int outputs) : IDisposable
{
    /// <summary>The largest output a context keeps a buffer for; a larger one is allocated by ONNX Runtime for its run.</summary>
    public const long MaxOutputBytes = 16 * 1024 * 1024;

    /// <summary>How many row counts a context keeps input or output values for; others get values for their run only.</summary>
    public const int MaxKeptShapes = 128;

    /// <summary>The most input bytes of one run a context copies into buffers of its own; larger inputs are pinned where they are.</summary>
    public const long MaxKeptInputBytes = 1024 * 1024;

    public RunOptions Options { get; } = new();

    public OrtValue[] Values { get; } = new OrtValue[inputs];

    public GCHandle[] Handles { get; } = new GCHandle[inputs];

    public long[][] Shapes { get; } = new long[inputs][];

    public byte[][] InputBuffers { get; } = new byte[inputs][];

    /// <summary>Input values over the input buffers, by row count.</summary>
    public Dictionary<long, OrtValue[]> InputValueCache { get; } = new();

    public byte[][] OutputBuffers { get; } = new byte[outputs][];

    public long[][] OutputShapes { get; } = new long[outputs][];

    public int[] OutputBytes { get; } = new int[outputs];

    /// <summary>The rows of the run the output shapes and sizes were last prepared for.</summary>
    public long OutputRows { get; set; }

    /// <summary>Output values over the buffers, by row count.</summary>
    public Dictionary<long, OrtValue[]> OutputValueCache { get; } = new();

    public static void DisposeAll(OrtValue?[] values)
    {
        foreach (var value in values)
        {
            value?.Dispose();
        }
    }

    /// <summary>
    /// Makes <paramref name="buffer"/> hold at least <paramref name="bytes"/>: a larger one, pinned for life on the pinned
    /// object heap (ONNX Runtime reads or writes it without a handle per run), at least doubling up to <paramref name="max"/>.
    /// The values kept over the old buffer are disposed first.
    /// </summary>
    public static void EnsureBuffer(ref byte[] buffer, int bytes, long max, Dictionary<long, OrtValue[]> kept)
    {
        if (buffer is not null && buffer.Length >= bytes)
        {
            return;
        }

        Forget(kept);
        buffer = GC.AllocateUninitializedArray<byte>((int)Math.Max(bytes, Math.Min(max, Math.Max(64, (buffer?.Length ?? 0) * 2L))), pinned: true);
    }

    /// <summary>Disposes kept values and forgets them.</summary>
    public static void Forget(Dictionary<long, OrtValue[]> kept)
    {
        foreach (var values in kept.Values)
        {
            DisposeAll(values);
        }

        kept.Clear();
    }

    public void Dispose()
    {
        Forget(InputValueCache);
        Forget(OutputValueCache);
        Options.Dispose();
    }
}

/// <summary>The bytes or path of one ONNX model, read once and shared by its instances.</summary>
internal sealed class OnnxModelData
{
    public OnnxModelData(byte[]? bytes, string? path)
    {
        Bytes = bytes;
        Path = path;
    }

    public byte[]? Bytes { get; }

    public string? Path { get; }
}
