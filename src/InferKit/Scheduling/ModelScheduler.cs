using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tensors;
using Microsoft.Extensions.Logging;

namespace InferKit.Scheduling;

/// <summary>Who calls <see cref="ModelScheduler.Pump"/>, which decides where formed batches run.</summary>
internal enum DispatchMode
{
    /// <summary>A caller that just queued its request: it may run a batch holding its own request inline.</summary>
    Caller,
    /// <summary>A thread-pool worker that just finished a batch: it keeps running batches while there is work.</summary>
    Worker,
    /// <summary>A timer callback: it hands every batch to the thread pool.</summary>
    Timer,
    /// <summary>The scheduler's runner thread, woken while a full batch is queued: it runs batches back to back.</summary>
    Runner,
}

/// <summary>
/// The per-model-version scheduler: admission (queue limit, deadline feasibility, draining), priority lanes ordered
/// earliest-deadline-first, batch forming (size cap, delay, preferred sizes, shape compatibility, padding), dispatch
/// to instances chosen by the load-balancing strategy, and the answer to every request exactly once.
/// </summary>
/// <remarks>
/// The queue is guarded by one short lock that is never held across an await or a model run. Work is
/// dispatched by whoever makes it possible: a caller that queues a request, a worker that finishes a batch, or
/// the timer (queue delay, deadlines). A lone caller with an empty queue and an idle instance runs on its own thread.
/// While a full batch is queued (a backlog: nothing is gained by waiting for more requests), batches run back to back
/// on the scheduler's own runner thread rather than through the thread pool, whose queue may be long under the very
/// load that built the backlog.
/// </remarks>
internal sealed class ModelScheduler : IDisposable
{
    private const int Lanes = 4;
    private const int MaxDeferredPerLane = 64;

    private readonly BatchingOptions _options;
    private readonly ILogger _logger;
    private readonly ModelTelemetry? _telemetry;
    private readonly Lock _gate = new();
    private readonly DeadlineQueue[] _lanes;
    private readonly int[] _laneCount = new int[Lanes];
    private readonly long[] _laneRows = new long[Lanes];
    private readonly int[] _skipped = new int[Lanes];
    private readonly List<PendingRequest> _deferred = new();
    private readonly ConcurrentQueue<PendingRequest> _requestPool = new();
    private readonly ConcurrentQueue<Batch> _batchPool = new();
    private readonly ITimer _timer;
    private readonly IThreadPoolWorkItem _pumpItem;

    /// <summary>
    /// True while requests are joined into batches: the model's axis 0 is a batch axis and batching is on. Cleared for
    /// good by <see cref="StopJoining"/> when a joined batch's outputs show that axis 0 is not a batch axis after all.
    /// </summary>
    private volatile bool _batchable;
    private int _joiningStopped;
    private long _timerDue = long.MaxValue;
    private long _sequence;
    private int _queued;
    private int _active;
    private int _cap;
    private int _pumpQueued;
    private int _lastBatchRequests;
    private readonly SemaphoreSlim _runnerSignal = new(0, 1);
    private readonly Lock _runnerGate = new();
    private Thread? _runner;
    private int _runnerAwake; // RunnerAsleep, RunnerAwake or RunnerAgain
    private const int RunnerAsleep = 0;
    private const int RunnerAwake = 1;
    /// <summary>Awake, and a hand-off came while it pumped: it pumps once more before it may sleep.</summary>
    private const int RunnerAgain = 2;
    private readonly long _deliveryMargin;

    /// <summary>Ticks between two requests admitted to re-measure an estimate that refuses them (see <see cref="TryAdmitProbe"/>).</summary>
    private readonly long _probeInterval;

    /// <summary><see cref="BatchLatencyModel.Samples"/> when admission last looked, and since when it has not changed.</summary>
    private long _seenSamples;

    private long _samplesUnchangedSince;

    /// <summary>
    /// At most this much of the delivery margin is still kept when the caller reads its result: the caller reads its own
    /// clock after that, so a success read closer than this to the deadline is answered DeadlineExceeded.
    /// </summary>
    private const double ReadMarginSeconds = 20e-6;
    private readonly string _queueFullMessage;
    private volatile bool _draining;
    private TaskCompletionSource? _drained;
    private volatile bool _disposed;

    /// <summary>
    /// Checks every <see cref="_watchdogPeriod"/> (RunTimeout / 2) for a run that has not returned within twice RunTimeout (see
    /// <see cref="CheckStuckRuns"/>); null when no RunTimeout is set.
    /// </summary>
    private readonly ITimer? _watchdog;
    private readonly TimeSpan _watchdogPeriod;
    private readonly long _hungTicks;
    private static readonly TimeSpan MinWatchdogPeriod = TimeSpan.FromMilliseconds(1);

    public ModelScheduler(string model, string version, ModelSignature signature, InstancePool pool, ModelOptions options, TimeProvider time, ILogger logger, InferKitMetrics? metrics)
    {
        ModelName = model;
        Version = version;
        Signature = signature;
        Pool = pool;
        Time = time;
        _options = options.Batching;
        Health = options.Health;
        _logger = SafeLogger.Wrap(logger);
        _batchable = signature.IsBatchable && _options.Enabled;
        _deliveryMargin = (long)(_options.DeliveryMargin.TotalSeconds * time.TimestampFrequency);
        _probeInterval = (long)(InfeasibleProbeInterval.TotalSeconds * time.TimestampFrequency);
        ReadMargin = (long)(Math.Min(_options.DeliveryMargin.TotalSeconds, ReadMarginSeconds) * time.TimestampFrequency);
        _queueFullMessage = $"Model '{model}': the queue is full ({_options.MaxQueueLength} requests).";
        Padding = PaddingPlan.Create(model, signature, _options.Padding);
        Latency = new BatchLatencyModel(_options.MaxBatchSize);
        Drain = new DrainRateModel((long)(DrainWindowSeconds * time.TimestampFrequency), time.TimestampFrequency);
        _cap = _options.Adaptive.Enabled ? Math.Clamp(_options.Adaptive.InitialBatchSize, 1, _options.MaxBatchSize) : _options.MaxBatchSize;
        _lanes = new DeadlineQueue[Lanes];
        for (int i = 0; i < Lanes; i++)
        {
            _lanes[i] = new DeadlineQueue();
        }

        _timer = time.CreateTimer(static s => ((ModelScheduler)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        if (Health.RunTimeout is TimeSpan runTimeout)
        {
            // Idle until the version is published (StartWatchdog), so a load that fails before then leaves no timer running.
            // Hung: still running at twice RunTimeout. A run that is only slow (between one and two RunTimeouts) is judged
            // when it returns, against FailureThreshold, as before.
            _hungTicks = (long)(2 * runTimeout.TotalSeconds * time.TimestampFrequency);
            _watchdogPeriod = runTimeout / 2 > MinWatchdogPeriod ? runTimeout / 2 : MinWatchdogPeriod;
            _watchdog = time.CreateTimer(static s => ((ModelScheduler)s!).CheckStuckRuns(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }

        _pumpItem = new PumpWorkItem(this);
        _telemetry = metrics?.ForModel(model, version);
        _telemetry?.Attach(this);
    }

    public string ModelName { get; }

    public string Version { get; }

    public ModelSignature Signature { get; }

    public InstancePool Pool { get; }

    public TimeProvider Time { get; }

    public InstanceHealthOptions Health { get; }

    public PaddingPlan Padding { get; }

    public BatchLatencyModel Latency { get; }

    /// <summary>How fast a backlog of this model version drains, measured under load (see <see cref="DrainRateModel"/>).</summary>
    internal DrainRateModel Drain { get; }

    /// <summary>The shortest span one drain-rate sample covers.</summary>
    internal const double DrainWindowSeconds = 0.02;

    /// <summary>Requests waiting (not yet in a batch).</summary>
    public int QueueLength => Volatile.Read(ref _queued);

    /// <summary>Requests admitted and not yet answered (queued or running).</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>The current batch cap (adaptive, or MaxBatchSize).</summary>
    public int BatchCap => Volatile.Read(ref _cap);

    /// <summary>Timestamp ticks before the deadline by which a caller must read a success (see <see cref="PendingRequest.GetResult"/>).</summary>
    internal long ReadMargin { get; }

    /// <summary>The runner thread, once a backlog started it (for tests).</summary>
    internal Thread? RunnerThread => _runner;

    /// <summary>Request objects waiting in the pool for reuse.</summary>
    internal int PooledRequests => _requestPool.Count;

    /// <summary>
    /// Tests only: called under the lock with the head a batch would start from, as soon as it is peeked: before the
    /// batch decides whether to wait for more requests (MaxQueueDelay), and before the head is taken.
    /// </summary>
    internal Action<PendingRequest>? BeforeFirstTake { get; set; }

    /// <summary>Tests only: called on the admitting thread once a request passed the admission checks, before it is counted and queued.</summary>
    internal Action<InferenceRequest>? AfterAdmissionChecks { get; set; }

    /// <summary>Tests only: called on the thread that runs a batch, with the batch, before its requests' inputs are joined (a throw fails the join).</summary>
    internal Action<Batch>? BeforeJoin { get; set; }

    /// <summary>Metrics, spans, alert windows and audit of this model version; null without a telemetry hub.</summary>
    internal ModelTelemetry? Telemetry => _telemetry;

    /// <summary>Admits, queues and (when possible) runs one request.</summary>
    public ValueTask<InferenceResponse> InferAsync(InferenceRequest request, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<InferenceResponse>(cancellationToken);
        }

        long now = Time.GetTimestamp();

        // Validated into this thread's scratch: a request refused at admission never takes a pooled request object.
        int inputCount = Signature.Inputs.Count;
        var scratch = ThreadScratch<Tensor>.Take(inputCount);
        var ordered = scratch.AsSpan(0, inputCount);
        int rows;
        ulong mask;
        ulong[]? wideMask;
        try
        {
            rows = RequestValidator.Validate(ModelName, Signature, request, ordered, _options.Padding.MaxPaddedLength, Padding.Enabled, out mask, out wideMask);
        }
        catch
        {
            ThreadScratch<Tensor>.Return(scratch, inputCount, int.MaxValue);
            throw;
        }

        long deadline = DeadlineOf(request, now);
        int lane = Math.Clamp((int)request.Priority, 0, Lanes - 1);

        // The request's span: a child of the caller's Activity.Current; null (and free) when nothing listens.
        var activity = _telemetry?.StartRequest(request);

        // Admission: refusals are answered at once, without queueing (and without a pooled request object).
        if (Refusal(request, lane, rows, deadline, now, activity) is { } answered)
        {
            ThreadScratch<Tensor>.Return(scratch, inputCount, int.MaxValue);
            return new ValueTask<InferenceResponse>(answered);
        }

        AfterAdmissionChecks?.Invoke(request);
        var pending = Rent();
        ordered.CopyTo(pending.Inputs);
        ThreadScratch<Tensor>.Return(scratch, inputCount, int.MaxValue);
        pending.Init(request, rows, mask, wideMask, lane, deadline, now, Interlocked.Increment(ref _sequence), cancellationToken);
        pending.Activity = activity;
        // Concurrent traffic: other requests in flight, or the last batch carried several. Then a request queues so it
        // can join a batch, and a pool work item (run after the continuations already queued) forms that batch.
        bool concurrent = Interlocked.Increment(ref _active) > 1 || Volatile.Read(ref _lastBatchRequests) > 1;

        // A drain or a disposal may have begun since the admission checks, which ran without the lock. Counted as active
        // now, this request is either seen by the drain (which waits for it) or sees the drain here; one that queues
        // checks again under the lock, which Dispose holds while it empties the queue.
        bool closed = _draining;

        // Fast path: nothing queued, an idle instance and no concurrent traffic: run on the caller's thread, no hop, no queue.
        if (!closed && !concurrent && _options.AllowInlineExecution && _options.MaxQueueDelay <= TimeSpan.Zero && Volatile.Read(ref _queued) == 0
            && Pool.TryAcquire(out var idle))
        {
            pending.TryStart();
            pending.Inline = true;
            return RunInline(pending, idle);
        }

        bool full = false;
        if (!closed)
        {
            lock (_gate)
            {
                closed = _draining;
                // The limit is exact: checked and taken under the lock (the check above only answers a full queue cheaply).
                full = !closed && _queued >= _options.MaxQueueLength;
                if (!closed && !full)
                {
                    _lanes[lane].Enqueue(pending);
                    _laneCount[lane]++;
                    _laneRows[lane] += rows;
                    _queued++;
                    if (deadline < _timerDue)
                    {
                        ArmTimer(deadline, now);
                    }
                }
            }
        }

        if (closed || full)
        {
            EndActive();
            pending.Activity = null;
            pending.Recycle();
            return new ValueTask<InferenceResponse>(closed
                ? RefuseShuttingDown(request, now, activity)
                : Refuse(request, RefusalReason.QueueFull, EstimateDrain(Volatile.Read(ref _queued)), _queueFullMessage, now, activity));
        }

        if (cancellationToken.CanBeCanceled)
        {
            pending.Registration = cancellationToken.UnsafeRegister(static s => ((PendingRequest)s!).Owner.OnCancelled((PendingRequest)s!), pending);
        }

        var task = new ValueTask<InferenceResponse>(pending, pending.Version);
        if (_batchable && concurrent)
        {
            // Under concurrency a caller does not form a batch itself: a pool work item does, after the continuations
            // already queued on this thread have run and added their requests to the batch.
            HandOff();
        }
        else
        {
            Pump(DispatchMode.Caller, pending);
        }

        return task;
    }

    /// <summary>Stops admission; the returned source completes once every admitted request is answered.</summary>
    internal TaskCompletionSource StopAdmission()
    {
        lock (_gate)
        {
            _draining = true;
            // Not read before the write is visible: an admitting thread counts itself active, then reads _draining.
            Interlocked.MemoryBarrier();
            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (Volatile.Read(ref _active) == 0)
            {
                _drained.TrySetResult();
            }

            return _drained;
        }
    }

    /// <summary>Stops admission and completes when every admitted request is answered (or the timeout passes).</summary>
    public async Task<bool> DrainAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var tcs = StopAdmission();

        if (Volatile.Read(ref _active) > 0)
        {
            Log.Draining(_logger, ModelName, Volatile.Read(ref _active));
        }

        try
        {
            await tcs.Task.WaitAsync(timeout, Time, cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>Answers every queued request with a shutdown refusal and stops the timer.</summary>
    public void Dispose()
    {
        List<PendingRequest> orphans = new();
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _draining = true;
            foreach (var lane in _lanes)
            {
                while (lane.TryDequeue(out var r))
                {
                    if (r.TryEndQueued())
                    {
                        _laneCount[r.Lane]--;
                        _laneRows[r.Lane] -= r.Rows;
                        _queued--;
                        orphans.Add(r);
                    }
                }
            }
        }

        _timer.Dispose();
        _watchdog?.Dispose();
        lock (_runnerGate)
        {
            if (_runner is not null && Interlocked.Exchange(ref _runnerAwake, RunnerAwake) == RunnerAsleep)
            {
                _runnerSignal.Release(); // it sees _disposed and ends
            }
        }

        _telemetry?.Detach(this);
        foreach (var r in orphans)
        {
            CountRefusal(RefusalReason.ShuttingDown);
            Finish(r, InferenceResponse.Refused(ModelName, r.Request.Id, RefusalReason.ShuttingDown, null, $"Model '{ModelName}' was unloaded before the request ran."), InferenceOutcome.Refused);
        }
    }

    /// <summary>Forms batches while there is work and an instance with room, and runs or hands them off; true when it formed any.</summary>
    internal bool Pump(DispatchMode mode, PendingRequest? own)
    {
        bool formed = false;
        while (Volatile.Read(ref _queued) > 0)
        {
            if (!Pool.TryAcquire(out var instance))
            {
                if (!Pool.AnyAvailable())
                {
                    FailQueuedNoInstance();
                }

                return formed;
            }

            Batch? batch;
            long waitUntil;
            lock (_gate)
            {
                batch = FormBatch(Time.GetTimestamp(), out waitUntil);
            }

            if (batch is null)
            {
                instance.Unreserve();
                if (waitUntil != long.MaxValue)
                {
                    // Waiting for more requests (MaxQueueDelay). Arm the timer now that the instance is free again: a
                    // timer that fired while this thread held the reservation found no instance and did nothing.
                    lock (_gate)
                    {
                        if (waitUntil < _timerDue || _timerDue == long.MaxValue)
                        {
                            ArmTimer(waitUntil, Time.GetTimestamp());
                        }
                    }

                    return formed;
                }

                continue;
            }

            formed = true;
            batch.Instance = instance;
            instance.AddRows(batch.Rows);
            if (mode == DispatchMode.Caller && own is not null && _options.AllowInlineExecution && batch.Contains(own))
            {
                own.Inline = false; // its answer goes through the awaited value task as usual
                RunBatch(batch);
                HandOff();
                return true;
            }

            if (mode is DispatchMode.Worker or DispatchMode.Runner && !(Volatile.Read(ref _queued) > 0 && HasRoom()))
            {
                // Run the last batch this thread can form here. A worker then leaves further work to a fresh work item
                // so the continuations this batch just queued on this thread run first (prompt answers, fuller next
                // batch); the runner's loop decides for itself.
                RunBatch(batch);
                if (mode == DispatchMode.Worker)
                {
                    HandOff();
                }

                return true;
            }

            ThreadPool.UnsafeQueueUserWorkItem(batch, preferLocal: false);
        }

        return formed;
    }

    internal void RunBatch(Batch batch)
    {
        Volatile.Write(ref _lastBatchRequests, batch.Count);
        int rows = batch.Rows;
        batch.Run();
        Drain.Record(rows, Time.GetTimestamp(), backlogged: Backlogged());
        if (_options.Adaptive.Enabled && batch.Seconds > 0)
        {
            AdaptCap(rows, batch.Seconds);
        }

        batch.Reset();
        _batchPool.Enqueue(batch);
    }

    /// <summary>
    /// Whether work queued behind a completing batch is a backlog to measure the drain by: any queued request, unless it
    /// may wait for its batch to fill (MaxQueueDelay), where less than a full batch waits by choice and the time until it
    /// runs is the queue delay, not what draining costs.
    /// </summary>
    private bool Backlogged()
        => Volatile.Read(ref _queued) > 0 && (!_batchable || _options.MaxQueueDelay <= TimeSpan.Zero || BacklogFull());

    internal void Return(PendingRequest request) => _requestPool.Enqueue(request);

    // ---- completion hooks called by Batch ----

    internal void Complete(PendingRequest request, InferenceResponse response, long now)
    {
        // A result that would reach the caller after its deadline (the hand-over to the caller's continuation takes
        // up to DeliveryMargin) is not delivered: the caller gets DeadlineExceeded instead of a late answer.
        if (request.Deadline != long.MaxValue && now + _deliveryMargin > request.Deadline)
        {
            response.Dispose();
            response = now > request.Deadline
                ? InferenceResponse.Expired(ModelName, request.Request.Id,
                    static (r, ms, _) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the result was ready {ms:F1} ms after the deadline and was discarded."),
                    Time.GetElapsedTime(request.Deadline, now).TotalMilliseconds, 0)
                : InferenceResponse.Expired(ModelName, request.Request.Id,
                    static (r, ms, _) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the result was ready {ms:F1} ms before the deadline, within the delivery margin, and was discarded."),
                    Time.GetElapsedTime(now, request.Deadline).TotalMilliseconds, 0);
        }

        if (!request.TryFinishRunning())
        {
            response.Dispose(); // cancelled while running; its caller has already been answered
            return;
        }

        request.ReadyAt = now;
        Finish(request, response, response.IsSuccess ? InferenceOutcome.Success : InferenceOutcome.DeadlineExceeded, now, fromBatch: true);
    }

    /// <summary>
    /// Records a success with a deadline as its caller reads it (see <see cref="Finish"/>): a success ending when its batch
    /// did, or the DeadlineExceeded that replaced it ending <paramref name="ended"/>, when the caller read it.
    /// </summary>
    internal void EndAtRead(PendingRequest request, InferenceResponse response, long ended)
        => _telemetry?.RequestEnded(request.Request, request.Enqueued, request.Activity,
            response.IsSuccess ? InferenceOutcome.Success : InferenceOutcome.DeadlineExceeded, response, null, ended);

    /// <summary>A success that reached its caller after the deadline, or inside the read margin: discarded, and DeadlineExceeded answered instead.</summary>
    internal InferenceResponse DiscardLate(PendingRequest request, InferenceResponse response, long now)
    {
        _telemetry?.CountDiscardedLate();
        response.Dispose();
        long ready = request.ReadyAt == 0 ? now : request.ReadyAt;
        double readyBefore = Time.GetElapsedTime(ready, request.Deadline).TotalMilliseconds;
        return now > request.Deadline
            ? InferenceResponse.Expired(ModelName, request.Request.Id,
                static (r, before, after) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the result was ready {before:F1} ms before the deadline but reached the caller {after:F1} ms after it, and was discarded rather than answered late."),
                readyBefore, Time.GetElapsedTime(request.Deadline, now).TotalMilliseconds)
            : InferenceResponse.Expired(ModelName, request.Request.Id,
                static (r, before, left) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the result was ready {before:F1} ms before the deadline but reached the caller only {left * 1000:F0} µs before it (inside the read margin), and was discarded rather than risk a late answer."),
                readyBefore, Time.GetElapsedTime(now, request.Deadline).TotalMilliseconds);
    }

    /// <summary>
    /// A running request that is ended without being run (again): one cancelled meanwhile is left alone (its caller has its
    /// answer); one whose deadline passed at <paramref name="now"/> is answered DeadlineExceeded.
    /// </summary>
    internal void ExpireUnrun(PendingRequest request, long now)
    {
        if (!request.TryFinishRunning())
        {
            return;
        }

        Finish(request, InferenceResponse.Expired(ModelName, request.Request.Id,
            static (r, ms, _) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the deadline passed {ms:F1} ms before the request could run again alone (the outputs of its batch could not be split); it was not run."),
            Time.GetElapsedTime(request.Deadline, now).TotalMilliseconds, 0), InferenceOutcome.DeadlineExceeded, now);
    }

    /// <summary>
    /// A running request whose run its caller's token stopped, or that was cancelled while its run went on (an inline
    /// run, see <see cref="Batch.RunToken"/>): answered as cancelled, as <see cref="OnCancelled"/> answers a queued one.
    /// </summary>
    internal void CancelRunning(PendingRequest request)
    {
        if (!request.TryFinishRunning())
        {
            return;
        }

        AnswerCancelled(request);
    }

    /// <summary>Answers a request that its caller's token ended (its state already moved to done) as cancelled.</summary>
    private void AnswerCancelled(PendingRequest request)
    {
        _telemetry?.RequestEnded(request.Request, request.Enqueued, request.Activity, InferenceOutcome.Cancelled, null, null);
        EndActive();
        request.DeliverException(new OperationCanceledException($"The request to model '{ModelName}' was cancelled.", request.Token));
    }

    internal void Fail(PendingRequest request, Exception exception)
    {
        if (!request.TryFinishRunning())
        {
            return;
        }

        _telemetry?.RequestEnded(request.Request, request.Enqueued, request.Activity, InferenceOutcome.Error, null, exception);
        EndActive();
        request.DeliverException(exception);
    }

    /// <summary>Starts the stuck-run watchdog (when RunTimeout is set) once the version is published; stopped by <see cref="Dispose"/>.</summary>
    internal void StartWatchdog()
    {
        if (_watchdog is null)
        {
            return;
        }

        lock (_gate)
        {
            if (!_disposed)
            {
                _watchdog.Change(_watchdogPeriod, _watchdogPeriod);
            }
        }
    }

    /// <summary>
    /// The watchdog's tick: passive health judges RunTimeout when a run returns, so a run that never returns (a hung native
    /// call) would leave its instance in rotation, its free slots still given new batches. An instance with a run older
    /// than twice RunTimeout (hung, not just slow) is taken out at once, whatever FailureThreshold says, with the usual
    /// back-off (and logged); the run itself is not stopped, and when it returns it is answered and counted once (see
    /// <see cref="ModelInstance.Complete"/>). The instance comes back as any other.
    /// </summary>
    private void CheckStuckRuns()
    {
        if (_disposed)
        {
            return;
        }

        long now = Time.GetTimestamp();
        foreach (var instance in Pool.Instances)
        {
            if (instance.TryTakeOutStuck(now, _hungTicks, out var running))
            {
                var until = instance.ToInfo().OutUntil ?? Time.GetUtcNow();
                Log.InstanceStuck(_logger, ModelName, instance.Id, until, running, Health.RunTimeout.GetValueOrDefault());
                ArmReturn(instance);
            }
        }
    }

    internal void InstanceTakenOut(ModelInstance instance)
    {
        var until = instance.ToInfo().OutUntil ?? Time.GetUtcNow();
        Log.InstanceTakenOut(_logger, ModelName, instance.Id, until, instance.TakenOutAfter);
        ArmReturn(instance);
    }

    /// <summary>Arms the timer for the moment a taken-out instance returns, so that work waiting for it is dispatched then.</summary>
    private void ArmReturn(ModelInstance instance)
    {
        long back = instance.OutUntilTimestamp;
        if (back != 0)
        {
            lock (_gate)
            {
                if (back < _timerDue)
                {
                    ArmTimer(back, Time.GetTimestamp());
                }
            }
        }
    }

    internal void InstanceRestored(ModelInstance instance) => Log.InstanceRestored(_logger, ModelName, instance.Id);

    internal void BatchCompleted(ModelInstance instance, int rows, double seconds) => _telemetry?.BatchCompleted(instance, rows, seconds);

    internal void BatchFailed(ModelInstance instance, int rows, Exception error) => Log.BatchFailed(_logger, ModelName, rows, instance.Id, error);

    /// <summary>
    /// A joined batch's outputs showed that the model's axis 0 is not a batch axis (<see cref="UnsplittableOutputException.AxisZeroIsNotBatch"/>),
    /// a fact of this model version rather than of the requests: from now on each batch carries one request (as with
    /// ModelOptions.AxisZeroIsBatch = false), so no joined run is wasted again, and the first time logs one warning that
    /// names the setting. Batches already formed still run each of their requests alone.
    /// </summary>
    internal void StopJoining(UnsplittableOutputException error)
    {
        if (Interlocked.Exchange(ref _joiningStopped, 1) == 0)
        {
            _batchable = false;
            Log.JoiningStopped(_logger, ModelName, Version, error);
        }
    }

    // ---- internals ----

    private ValueTask<InferenceResponse> RunInline(PendingRequest pending, ModelInstance instance)
    {
        var batch = RentBatch();
        batch.Add(pending);
        batch.Instance = instance;
        // The caller waits on this thread, with no cancellation callback registered: its token reaches the run instead.
        var token = pending.Token;
        batch.RunToken = token;
        instance.AddRows(pending.Rows);
        RunBatch(batch);
        var result = pending.InlineResult;
        var error = pending.InlineException;
        pending.Recycle();
        HandOff();
        if (error is not null)
        {
            // As a queued request's answer: a cancelled caller catches the scheduler's OperationCanceledException (its
            // message and token) from a cancelled task, not the bare one ValueTask.FromCanceled would make.
            return FailedAnswer.Create(error);
        }

        return new ValueTask<InferenceResponse>(result!);
    }

    /// <summary>
    /// Leaves any further work to the runner thread when a full batch is queued, else to a thread-pool work item
    /// (queued globally, so local continuations run first and add their requests to the batch).
    /// </summary>
    internal void HandOff()
    {
        if (Volatile.Read(ref _queued) == 0)
        {
            return;
        }

        if (BacklogFull() && WakeRunner())
        {
            return;
        }

        if (Interlocked.Exchange(ref _pumpQueued, 1) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_pumpItem, preferLocal: false);
        }
    }

    /// <summary>True when the queue holds at least a full batch: waiting for more callers cannot make the next batch fuller.</summary>
    private bool BacklogFull()
    {
        long rows = 0;
        for (int l = 0; l < Lanes; l++)
        {
            rows += Volatile.Read(ref _laneRows[l]);
        }

        return rows >= (_batchable ? Volatile.Read(ref _cap) : 1);
    }

    /// <summary>
    /// Makes sure the runner thread is awake (starting it the first time), and that one already awake pumps once more
    /// after this hand-off; false once disposed.
    /// </summary>
    private bool WakeRunner()
    {
        if (_disposed)
        {
            return false;
        }

        while (true)
        {
            int state = Volatile.Read(ref _runnerAwake);
            if (state == RunnerAgain)
            {
                return true;
            }

            if (state == RunnerAwake)
            {
                if (Interlocked.CompareExchange(ref _runnerAwake, RunnerAgain, RunnerAwake) == RunnerAwake)
                {
                    return true;
                }

                continue;
            }

            if (Interlocked.CompareExchange(ref _runnerAwake, RunnerAwake, RunnerAsleep) == RunnerAsleep)
            {
                if (_runner is null)
                {
                    lock (_runnerGate)
                    {
                        _runner ??= StartRunner();
                    }
                }

                _runnerSignal.Release();
                return true;
            }
        }
    }

    private Thread StartRunner()
    {
        var thread = new Thread(static s => ((ModelScheduler)s!).RunnerLoop())
        {
            IsBackground = true,
            Name = $"InferKit runner {ModelName}:{Version}",
        };
        thread.UnsafeStart(this);
        return thread;
    }

    /// <summary>
    /// The runner: woken while a full batch is queued, it runs batches back to back until the backlog is gone or no
    /// instance has room (the instance that frees up hands off again). Its answers reach callers through the thread
    /// pool's global queue, as any continuation completed off the pool does.
    /// </summary>
    private void RunnerLoop()
    {
        while (!_disposed)
        {
            _runnerSignal.Wait();
            while (true)
            {
                if (_disposed)
                {
                    Volatile.Write(ref _runnerAwake, RunnerAsleep);
                    return;
                }

                bool formed = Pump(DispatchMode.Runner, null);
                bool handedOff = Interlocked.Exchange(ref _runnerAwake, RunnerAsleep) == RunnerAgain;

                // Go on while it can make progress: it formed a batch, or a hand-off that found it awake relied on it. When
                // it formed nothing (the strategy waits for a busy instance, though another has room) and nobody handed
                // off, it sleeps: the instance that frees up hands off and wakes it. Looping on HasRoom alone spun here.
                if (!((formed || handedOff) && BacklogFull() && HasRoom())
                    || Interlocked.CompareExchange(ref _runnerAwake, RunnerAwake, RunnerAsleep) != RunnerAsleep)
                {
                    break;
                }
            }

            if (Volatile.Read(ref _queued) > 0 && !BacklogFull())
            {
                HandOff(); // what is left is less than a batch: the pool forms it once the callers' continuations ran
            }
        }
    }

    private bool HasRoom() => HasRoom(Time.GetTimestamp());

    private bool HasRoom(long now)
    {
        foreach (var i in Pool.Instances)
        {
            if (i.Outstanding < i.MaxConcurrency && i.IsAvailable(now))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Takes the next batch off the queue. Called under the lock.</summary>
    private Batch? FormBatch(long now, out long waitUntil)
    {
        waitUntil = long.MaxValue;
        SweepExpired(now);
        if (_queued == 0)
        {
            return null;
        }

        // The head can be cancelled between the peek and the take: cancellation ends a queued request without the lock
        // (the lock only guards its counters). Then the take fails and the next live head is tried.
        int lane;
        int cap;
        Batch batch;
        while (true)
        {
            lane = ChooseLane();
            var first = PeekLive(lane);
            if (first is null)
            {
                return null;
            }

            BeforeFirstTake?.Invoke(first);

            cap = _batchable ? Volatile.Read(ref _cap) : 1;
            if (_batchable && _options.MaxQueueDelay > TimeSpan.Zero)
            {
                long rowsQueued = 0;
                long oldest = long.MaxValue;
                long earliestDeadline = long.MaxValue;
                for (int l = 0; l < Lanes; l++)
                {
                    rowsQueued += _laneRows[l];
                    if (PeekLive(l) is { } head)
                    {
                        oldest = Math.Min(oldest, head.Enqueued);
                        earliestDeadline = Math.Min(earliestDeadline, head.Deadline); // each lane is earliest deadline first
                    }
                }

                long due = oldest + (long)(_options.MaxQueueDelay.TotalSeconds * Time.TimestampFrequency);
                if (earliestDeadline != long.MaxValue)
                {
                    // Waiting for more must leave a queued request time to run and be delivered before its deadline: waiting
                    // the whole delay let a request with a shorter timeout expire unrun on an idle model.
                    long run = (long)(Latency.Estimate(Math.Max(1, cap)) * Time.TimestampFrequency);
                    due = Math.Min(due, earliestDeadline - _deliveryMargin - run);
                }

                if (rowsQueued < cap && !PreferredReachable(rowsQueued) && now < due)
                {
                    waitUntil = due;
                    return null;
                }
            }

            batch = RentBatch();
            if (Take(lane, first, batch))
            {
                break;
            }

            _batchPool.Enqueue(batch);
        }

        if (_batchable && batch.Rows < cap)
        {
            Fill(batch, lane, cap);
        }

        if (_batchable && _options.PreferredBatchSizes.Count > 0 && batch.Rows < cap)
        {
            // Cut to the largest preferred size that the batch's first requests make exactly. Requests carry several rows
            // at times: cutting towards a preferred size they cannot make left a batch of neither that size nor what was
            // queued, and a batch that makes none is run as it was formed.
            int keep = PreferredPrefix(batch);
            while (batch.Count > keep)
            {
                Untake(batch.RemoveLast());
            }
        }

        // Starvation accounting: a non-empty lane passed over this time counts one more skip.
        for (int l = 0; l < Lanes; l++)
        {
            _skipped[l] = l == lane || _laneCount[l] == 0 ? 0 : _skipped[l] + 1;
        }

        return batch;
    }

    private void Fill(Batch batch, int firstLane, int cap)
    {
        var firstInputs = batch[0].Inputs;
        for (int step = 0; step < Lanes && batch.Rows < cap; step++)
        {
            int l = step == 0 ? firstLane : OrderedLane(step, firstLane);
            var queue = _lanes[l];
            _deferred.Clear();
            bool full = false;
            while (batch.Rows < cap)
            {
                var head = PeekLive(l);
                if (head is null)
                {
                    break;
                }

                if (!Padding.Compatible(firstInputs, head.Inputs))
                {
                    if (_deferred.Count >= MaxDeferredPerLane)
                    {
                        break;
                    }

                    queue.Dequeue();
                    _deferred.Add(head);
                    continue;
                }

                if ((long)batch.Rows + head.Rows > cap || !batch.FitsJoined(head))
                {
                    full = true;
                    break;
                }

                Take(l, head, batch);
            }

            foreach (var r in _deferred)
            {
                queue.Enqueue(r);
            }

            _deferred.Clear();
            if (full)
            {
                break;
            }
        }
    }

    /// <summary>Lanes after the first: highest priority first, skipping the first lane.</summary>
    private static int OrderedLane(int step, int firstLane)
    {
        int seen = 0;
        for (int l = Lanes - 1; l >= 0; l--)
        {
            if (l == firstLane)
            {
                continue;
            }

            if (++seen == step)
            {
                return l;
            }
        }

        return firstLane;
    }

    /// <summary>Moves a live head into the batch; false when it ended (was cancelled) since it was peeked.</summary>
    /// <remarks>
    /// Started first, dequeued only then: a request cancelled since it was peeked may already have been dropped from the
    /// queue as a stale entry (by <see cref="PeekLive"/> on the way, as the queue-delay check does), and dequeuing blindly
    /// would remove the next request instead. One that starts was live all along, so nothing dropped it: it is the head.
    /// </remarks>
    private bool Take(int lane, PendingRequest head, Batch batch)
    {
        if (!head.TryStart())
        {
            return false; // its canceller adjusts the counters; PeekLive drops its entry
        }

        var taken = _lanes[lane].Dequeue();
        Debug.Assert(ReferenceEquals(taken, head), "the request taken is the head that was peeked");
        _laneCount[lane]--;
        _laneRows[lane] -= head.Rows;
        _queued--;
        batch.Add(head);
        return true;
    }

    private void Untake(PendingRequest request)
    {
        // Back to the queue, as it was: still admitted, still waiting (unless it was cancelled meanwhile).
        if (!request.ResetToQueued())
        {
            return;
        }

        _lanes[request.Lane].Enqueue(request);
        _laneCount[request.Lane]++;
        _laneRows[request.Lane] += request.Rows;
        _queued++;
    }

    private int ChooseLane()
    {
        int highest = -1;
        for (int l = Lanes - 1; l >= 0; l--)
        {
            if (_laneCount[l] > 0)
            {
                highest = l;
                break;
            }
        }

        int starved = -1;
        for (int l = highest - 1; l >= 0; l--)
        {
            if (_laneCount[l] > 0 && _skipped[l] >= _options.StarvationLimit && (starved < 0 || _skipped[l] > _skipped[starved]))
            {
                starved = l;
            }
        }

        return starved >= 0 ? starved : Math.Max(highest, 0);
    }

    private PendingRequest? PeekLive(int lane)
    {
        var queue = _lanes[lane];
        while (queue.TryPeek(out var head))
        {
            if (head.State == PendingRequest.Queued)
            {
                return head;
            }

            queue.Dequeue(); // cancelled while queued; its counters were already adjusted
        }

        return null;
    }

    private void SweepExpired(long now)
    {
        for (int l = 0; l < Lanes; l++)
        {
            while (PeekLive(l) is { } head && head.Deadline <= now)
            {
                _lanes[l].Dequeue();
                if (head.TryEndQueued())
                {
                    _laneCount[l]--;
                    _laneRows[l] -= head.Rows;
                    _queued--;
                    double waited = Time.GetElapsedTime(head.Enqueued, now).TotalMilliseconds;
                    Finish(head, InferenceResponse.Expired(ModelName, head.Request.Id,
                        static (r, ms, _) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the deadline passed after {ms:F1} ms in the queue; the request was not run."), waited, 0),
                        InferenceOutcome.DeadlineExceeded);
                }
            }
        }
    }

    private void OnTimer()
    {
        long now = Time.GetTimestamp();
        lock (_gate)
        {
            _timerDue = long.MaxValue;
            SweepExpired(now);
            long next = long.MaxValue;
            for (int l = 0; l < Lanes; l++)
            {
                if (PeekLive(l) is { } head && head.Deadline < next)
                {
                    next = head.Deadline;
                }
            }

            if (next != long.MaxValue)
            {
                ArmTimer(next, now);
            }
        }

        Pump(DispatchMode.Timer, null);
    }

    private void ArmTimer(long due, long now)
    {
        if (_disposed)
        {
            return;
        }

        _timerDue = due;
        _timer.Change(TimerDelay(due - now, Time.TimestampFrequency), Timeout.InfiniteTimeSpan);
    }

    /// <summary>The longest a timer is set for: a later due time is re-armed when it fires (timers refuse about 49.7 days and more).</summary>
    internal static readonly TimeSpan MaxTimerDelay = TimeSpan.FromHours(1);

    /// <summary>
    /// The timer delay for a due time <paramref name="ticks"/> away. Timers count whole milliseconds: a sub-millisecond
    /// wait is rounded up rather than let it fire at once and spin; a distant one is capped at <see cref="MaxTimerDelay"/>.
    /// </summary>
    internal static TimeSpan TimerDelay(long ticks, long frequency)
    {
        double ms = Math.Max(0, ticks) * 1000.0 / frequency;
        return ms <= 0 ? TimeSpan.Zero : ms >= MaxTimerDelay.TotalMilliseconds ? MaxTimerDelay : TimeSpan.FromMilliseconds(Math.Ceiling(ms));
    }

    private void OnCancelled(PendingRequest request)
    {
        request.CancellationCallbackRan();
        if (!request.TryEndAny(out int previous))
        {
            return;
        }

        if (previous == PendingRequest.Queued)
        {
            lock (_gate)
            {
                _laneCount[request.Lane]--;
                _laneRows[request.Lane] -= request.Rows;
                _queued--;
            }
        }

        AnswerCancelled(request);
    }

    private void FailQueuedNoInstance()
    {
        List<PendingRequest> failed = new();
        lock (_gate)
        {
            for (int l = 0; l < Lanes; l++)
            {
                while (PeekLive(l) is { } head)
                {
                    _lanes[l].Dequeue();
                    if (head.TryEndQueued())
                    {
                        _laneCount[l]--;
                        _laneRows[l] -= head.Rows;
                        _queued--;
                        failed.Add(head);
                    }
                }
            }
        }

        long back = Pool.EarliestReturn();
        TimeSpan? retry = back == 0 ? null : Time.GetElapsedTime(Time.GetTimestamp(), back);
        foreach (var r in failed)
        {
            CountRefusal(RefusalReason.NoHealthyInstance);
            Finish(r, InferenceResponse.Refused(ModelName, r.Request.Id, RefusalReason.NoHealthyInstance, retry,
                $"Model '{ModelName}': every instance is out of rotation after repeated failures."), InferenceOutcome.Refused);
        }
    }

    /// <summary>Ends a request: telemetry (its duration up to <paramref name="ended"/>, or now when 0), then the answer.</summary>
    private void Finish(PendingRequest request, InferenceResponse response, InferenceOutcome outcome, long ended = 0, bool fromBatch = false)
    {
        // A success with a deadline is recorded when its caller reads it (EndAtRead): a late hand-over turns it into
        // DeadlineExceeded there, and the metrics, alerts and audit must say what the caller got. (A caller that never
        // reads its result, against the ValueTask contract, leaves it unrecorded.) Everything else is recorded now,
        // before delivery: once delivered, the caller may dispose the response and the request may be recycled.
        if (_telemetry is not null && fromBatch && outcome == InferenceOutcome.Success && request.Deadline != long.MaxValue && !request.Inline)
        {
            request.EndsAtRead = true;
        }
        else
        {
            _telemetry?.RequestEnded(request.Request, request.Enqueued, request.Activity, outcome, response, null, ended);
        }

        EndActive();
        request.Deliver(response, fromBatch);
    }

    private void EndActive()
    {
        if (Interlocked.Decrement(ref _active) == 0 && _draining)
        {
            lock (_gate)
            {
                _drained?.TrySetResult();
            }
        }
    }

    /// <summary>
    /// The answer to a request refused at admission (shutting down, already expired, no instance in rotation, queue full,
    /// deadline that cannot be met), counted and traced; null when it is admitted.
    /// </summary>
    private InferenceResponse? Refusal(InferenceRequest request, int lane, int rows, long deadline, long now, Activity? activity)
    {
        if (_draining || _disposed)
        {
            return RefuseShuttingDown(request, now, activity);
        }

        if (deadline <= now)
        {
            var expired = InferenceResponse.Expired(ModelName, request.Id, $"Model '{ModelName}': the request's deadline had already passed when it arrived.");
            _telemetry?.RequestEnded(request, now, activity, InferenceOutcome.DeadlineExceeded, expired, null);
            return expired;
        }

        if (!Pool.AnyAvailable(now))
        {
            long back = Pool.EarliestReturn();
            TimeSpan? retry = back == 0 ? null : Time.GetElapsedTime(now, back);
            return Refuse(request, RefusalReason.NoHealthyInstance, retry, $"Model '{ModelName}': every instance is out of rotation after repeated failures.", now, activity);
        }

        if (Volatile.Read(ref _queued) >= _options.MaxQueueLength)
        {
            return Refuse(request, RefusalReason.QueueFull, EstimateDrain(Volatile.Read(ref _queued)), _queueFullMessage, now, activity);
        }

        if (deadline != long.MaxValue && _options.RefuseInfeasibleDeadlines && Latency.HasData)
        {
            double wait = EstimateWait(lane, rows, now);
            double remaining = (deadline - now - _deliveryMargin) / (double)Time.TimestampFrequency;
            if (wait > remaining && !TryAdmitProbe(now))
            {
                return Refuse(request, InferenceResponse.Refused(ModelName, request.Id, RefusalReason.DeadlineInfeasible, TimeSpan.FromSeconds(Math.Max(0.001, wait - remaining)),
                    static (r, away, needs) => string.Create(CultureInfo.InvariantCulture, $"Model '{r.Model}': the deadline ({away:F1} ms away) cannot be met; the queue ahead needs about {needs:F1} ms."),
                    remaining * 1000, wait * 1000), now, activity);
            }
        }

        return null;
    }

    /// <summary>The shortest time between two requests admitted by <see cref="TryAdmitProbe"/>.</summary>
    internal static readonly TimeSpan InfeasibleProbeInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// True for a request that the latency estimate refuses but that is admitted anyway to measure again. The estimate is
    /// learned only from batches that run, so refusing every request would keep one made stale (a slow warm-up, a run
    /// slowed by a pause of the process) for good, and the model would refuse all traffic with deadlines while idle.
    /// Only with nothing queued and an instance free, where the request's wait is its own run and delays no one, and
    /// only once no batch has run for <see cref="InfeasibleProbeInterval"/>: at most one such request per interval, and
    /// none while runs keep the estimate fresh. Its deadline still holds: if the run is as slow as estimated, it is
    /// answered DeadlineExceeded, never late.
    /// </summary>
    private bool TryAdmitProbe(long now)
    {
        if (Volatile.Read(ref _queued) != 0 || !HasRoom(now))
        {
            return false;
        }

        long samples = Latency.Samples;
        long since = Volatile.Read(ref _samplesUnchangedSince);
        if (samples != Volatile.Read(ref _seenSamples))
        {
            // A run measured since admission last looked: the estimate is fresh, and the interval starts again.
            Volatile.Write(ref _seenSamples, samples);
            Volatile.Write(ref _samplesUnchangedSince, now);
            return false;
        }

        return now - since >= _probeInterval && Interlocked.CompareExchange(ref _samplesUnchangedSince, now, since) == since;
    }

    private InferenceResponse RefuseShuttingDown(InferenceRequest request, long admitted, Activity? activity)
        => Refuse(request, RefusalReason.ShuttingDown, null, $"Model '{ModelName}' is shutting down and takes no new requests.", admitted, activity);

    private InferenceResponse Refuse(InferenceRequest request, RefusalReason reason, TimeSpan? retryAfter, string message, long admitted, Activity? activity)
        => Refuse(request, InferenceResponse.Refused(ModelName, request.Id, reason, retryAfter, message), admitted, activity);

    /// <summary>Counts and traces a request refused at admission; returns <paramref name="response"/>, its answer.</summary>
    private InferenceResponse Refuse(InferenceRequest request, InferenceResponse response, long admitted, Activity? activity)
    {
        CountRefusal(response.RefusalReason);
        _telemetry?.RequestEnded(request, admitted, activity, InferenceOutcome.Refused, response, null);
        return response;
    }

    private void CountRefusal(RefusalReason reason) => _telemetry?.CountRefusal(reason);

    internal static string ReasonName(RefusalReason reason) => TelemetryNames.Reason(reason);

    /// <summary>Refusals so far by reason (for aggregate logging and tests).</summary>
    internal long RefusalCount(RefusalReason reason) => _telemetry?.RefusalCount(reason) ?? 0;

    // The request's timeout was checked by the validator (negative only as Timeout.InfiniteTimeSpan: no timeout, not
    // even the default). long.MaxValue: no deadline.
    private long DeadlineOf(InferenceRequest request, long now)
    {
        long deadline = long.MaxValue;
        var timeout = RequestChecks.FiniteOr(request, _options.DefaultTimeout);
        if (timeout is TimeSpan t)
        {
            deadline = RequestChecks.After(now, t, Time.TimestampFrequency);
        }

        if (request.Deadline is DateTimeOffset d)
        {
            var remaining = d - Time.GetUtcNow();
            deadline = Math.Min(deadline, RequestChecks.After(now, remaining, Time.TimestampFrequency));
        }

        return deadline;
    }

    /// <summary>
    /// Predicted seconds from now until a request with <paramref name="rows"/> rows at <paramref name="priority"/> would be
    /// answered, from the queue ahead and the learned batch latency; null before anything was measured.
    /// </summary>
    internal double? PredictLatency(InferencePriority priority, int rows)
    {
        if (!Latency.HasData)
        {
            return null;
        }

        return EstimateWait(Math.Clamp((int)priority, 0, Lanes - 1), rows, Time.GetTimestamp());
    }

    /// <summary>Seconds until a new request at <paramref name="lane"/> with <paramref name="rows"/> rows would be answered.</summary>
    // now: the caller's timestamp, read a moment ago (admission reads the clock once).
    private double EstimateWait(int lane, int rows, long now)
    {
        long ahead = 0;
        for (int l = lane; l < Lanes; l++)
        {
            ahead += Volatile.Read(ref _laneRows[l]);
        }

        int cap = _batchable ? Math.Max(1, Volatile.Read(ref _cap)) : 1;
        int slots = Math.Max(1, Pool.AvailableConcurrency(now));
        long total = ahead + rows;
        long batches = (total + cap - 1) / cap;
        double perBatch = Latency.Estimate((int)Math.Min(total, cap));
        double queueWait = Math.Ceiling(batches / (double)slots) * perBatch;

        // Under load the queue drains slower than back-to-back batches would (the time between batches counts too):
        // once a backlog was measured draining, the queue ahead takes at least as long as that rate says. With nothing
        // queued ahead there is no backlog to drain: the wait is the request's own batch. Judging that by the rate too let
        // a rate measured under an old backlog (kept until the next one, which refusals then keep from forming) refuse an
        // idle model's requests for good.
        double drain = Drain.RowsPerSecond;
        if (drain > 0 && ahead > 0)
        {
            queueWait = Math.Max(queueWait, total / drain);
        }

        // With every instance busy, the running batch may have just started: count it whole.
        bool busy = !HasRoom(now);
        return queueWait + (busy ? perBatch : 0);
    }

    private TimeSpan? EstimateDrain(int queued)
    {
        if (!Latency.HasData)
        {
            return null;
        }

        int cap = _batchable ? Math.Max(1, Volatile.Read(ref _cap)) : 1;
        int slots = Math.Max(1, Pool.AvailableConcurrency());
        double seconds = Math.Ceiling(queued / (double)cap / slots) * Latency.Estimate(cap);
        return TimeSpan.FromSeconds(Math.Max(0.001, seconds / 2));
    }

    /// <summary>Whether some preferred batch size is at most <paramref name="rows"/>.</summary>
    private bool PreferredReachable(long rows)
    {
        foreach (var p in _options.PreferredBatchSizes)
        {
            if (p <= rows)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// How many of the batch's first requests to keep: the most whose rows make a preferred size exactly, or all of them
    /// when no prefix does (or the whole batch is already a preferred size).
    /// </summary>
    private int PreferredPrefix(Batch batch)
    {
        var preferred = _options.PreferredBatchSizes;
        int rows = batch.Rows;
        for (int keep = batch.Count; keep >= 1; keep--)
        {
            if (preferred.Contains(rows))
            {
                return keep;
            }

            rows -= batch[keep - 1].Rows;
        }

        return batch.Count;
    }

    private void AdaptCap(int rows, double seconds)
    {
        double target = _options.Adaptive.LatencyTarget.TotalSeconds;
        int cap = Volatile.Read(ref _cap);
        if (seconds > target)
        {
            Volatile.Write(ref _cap, Math.Max(1, Math.Min(cap - 1, (int)(cap * 0.9))));
        }
        else if (rows >= cap && cap < _options.MaxBatchSize)
        {
            Volatile.Write(ref _cap, cap + 1);
        }
    }

    private PendingRequest Rent() => _requestPool.TryDequeue(out var r) ? r : new PendingRequest(this, Signature.Inputs.Count);

    private Batch RentBatch() => _batchPool.TryDequeue(out var b) ? b : new Batch(this, Signature);

    private sealed class PumpWorkItem(ModelScheduler owner) : IThreadPoolWorkItem
    {
        public void Execute()
        {
            // A full fence, not a release store: Pump reads _queued next, and a store may pass a later load. A
            // caller that queued meanwhile and still saw the flag set (so queued no work item) would then be missed
            // by this pass too, and its request would wait for the next arrival or batch to be picked up.
            Interlocked.Exchange(ref owner._pumpQueued, 0);
            owner.Pump(DispatchMode.Worker, null);
        }
    }
}
