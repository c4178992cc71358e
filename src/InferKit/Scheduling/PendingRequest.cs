using System.Diagnostics;
using System.Threading.Tasks.Sources;
using InferKit.Tensors;

namespace InferKit.Scheduling;

/// <summary>
/// One admitted request while it waits and runs. Completed exactly once (a state machine guarded by CAS);
/// awaited through <see cref="IValueTaskSource{TResult}"/>, and recycled after the caller read the result. A request
/// whose cancellation callback was registered goes back to the pool only once that callback is known never to run (its
/// unregistration succeeded): a callback that ran, or may still be running, could otherwise cancel the object's next
/// request.
/// </summary>
internal sealed class PendingRequest : IValueTaskSource<InferenceResponse>
{
    public const int Queued = 0;
    public const int Running = 1;
    public const int Done = 2;

    /// <summary>Non-zero while this thread runs a caller's continuation synchronously (see <see cref="Deliver"/>).</summary>
    [ThreadStatic]
    private static int t_synchronousDepth;

    private ManualResetValueTaskSourceCore<InferenceResponse> _core;
    private int _state;
    private bool _unregistered;

    /// <summary>
    /// Set when the cancellation callback ran (see <see cref="CancellationCallbackRan"/>). Never cleared: such an object is
    /// never reused.
    /// </summary>
    private volatile bool _cancellationCallbackRan;

    public PendingRequest(ModelScheduler owner, int inputCount)
    {
        Owner = owner;
        Inputs = new Tensor[inputCount];
        _core.RunContinuationsAsynchronously = true;
    }

    public ModelScheduler Owner { get; }

    /// <summary>The inputs in signature order.</summary>
    public Tensor[] Inputs { get; }

    public InferenceRequest Request { get; private set; } = null!;

    public int Rows { get; private set; }

    /// <summary>The outputs asked for, one bit each; every bit set for all of them (see <see cref="WideOutputMask"/>).</summary>
    public ulong OutputMask { get; private set; }

    /// <summary>For a model with more than 64 outputs, the outputs a request that names some asked for (bit i of word i / 64); else null.</summary>
    public ulong[]? WideOutputMask { get; private set; }

    public int Lane { get; private set; }

    public long Deadline { get; private set; }

    public long Enqueued { get; private set; }

    public long Sequence { get; private set; }

    /// <summary>When the result was handed to the caller's continuation (scheduler timestamp); 0 before.</summary>
    public long ReadyAt { get; set; }

    /// <summary>True while the caller runs this request on its own thread and reads the result synchronously.</summary>
    public bool Inline { get; set; }

    /// <summary>
    /// True while a success with a deadline awaits its caller's read: its telemetry is recorded then, with the outcome the
    /// caller gets (DeadlineExceeded when the hand-over was late), not when the batch finished.
    /// </summary>
    public bool EndsAtRead { get; set; }

    /// <summary>The response of an inline run.</summary>
    public InferenceResponse? InlineResult { get; private set; }

    /// <summary>The failure of an inline run.</summary>
    public Exception? InlineException { get; private set; }

    public CancellationToken Token { get; private set; }

    /// <summary>
    /// The cancellation callback's registration (default: none). Set by the admitting thread after the request is
    /// queued, so a batch may answer the request before it is set; <see cref="Recycle"/> runs after the caller got the
    /// task, when it is.
    /// </summary>
    public CancellationTokenRegistration Registration { get; set; }

    /// <summary>The request's span while it is traced (ended by the scheduler's telemetry); null when nothing listens.</summary>
    public Activity? Activity { get; set; }

    public int State => Volatile.Read(ref _state);

    public short Version => _core.Version;

    public void Init(InferenceRequest request, int rows, ulong outputMask, ulong[]? wideOutputMask, int lane, long deadline, long enqueued, long sequence, CancellationToken token)
    {
        Request = request;
        Rows = rows;
        OutputMask = outputMask;
        WideOutputMask = wideOutputMask;
        Lane = lane;
        Deadline = deadline;
        Enqueued = enqueued;
        Sequence = sequence;
        Token = token;
        Inline = false;
        EndsAtRead = false;
        ReadyAt = 0;
        InlineResult = null;
        InlineException = null;
        Volatile.Write(ref _state, Queued);
    }

    /// <summary>
    /// Called first thing by the cancellation callback. A token cancelled as the callback is registered runs it
    /// synchronously inside the registration, which then returns no registration (default): nothing is left to
    /// unregister, yet the callback ran, and it may have ended the request while a queue entry or a batch still pointed at
    /// it. <see cref="Recycle"/> reads this rather than trust an empty registration.
    /// </summary>
    public void CancellationCallbackRan() => _cancellationCallbackRan = true;

    public bool TryStart() => Interlocked.CompareExchange(ref _state, Running, Queued) == Queued;

    /// <summary>Ends a queued request (expired, refused at drain, cancelled while queued).</summary>
    public bool TryEndQueued() => Interlocked.CompareExchange(ref _state, Done, Queued) == Queued;

    /// <summary>Ends a request whether it is queued or running (cancellation); false when it already ended.</summary>
    public bool TryEndAny(out int previous)
    {
        while (true)
        {
            previous = Volatile.Read(ref _state);
            if (previous == Done)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _state, Done, previous) == previous)
            {
                return true;
            }
        }
    }

    /// <summary>Puts a request taken into a batch back in the queue (before the batch ran).</summary>
    public bool ResetToQueued() => Interlocked.CompareExchange(ref _state, Queued, Running) == Running;

    public bool TryFinishRunning() => Interlocked.CompareExchange(ref _state, Done, Running) == Running;

    /// <summary>Delivers the result of a request this thread has ended.</summary>
    /// <param name="response">The answer.</param>
    /// <param name="fromBatch">
    /// True only where a finished batch answers its requests, holding no lock: there a request that allows it
    /// (<see cref="InferenceRequest.AllowSynchronousContinuation"/>) has its caller's continuation run on this thread.
    /// Every other path (expiry under the queue lock, cancellation, shutdown) hands it to the thread pool.
    /// </param>
    public void Deliver(InferenceResponse response, bool fromBatch = false)
    {
        Unregister();
        if (Inline)
        {
            InlineResult = response;
            return;
        }

        // Only this thread completes the request (the state machine above), so the flag is set before anyone reads it.
        // A continuation already running here synchronously may queue work that a batch answers on this same thread:
        // those answers go through the thread pool, so synchronous continuations never nest.
        bool synchronous = fromBatch && Request.AllowSynchronousContinuation && t_synchronousDepth == 0;
        _core.RunContinuationsAsynchronously = !synchronous;
        if (!synchronous)
        {
            _core.SetResult(response);
            return;
        }

        t_synchronousDepth++;
        try
        {
            _core.SetResult(response);
        }
        finally
        {
            t_synchronousDepth--;
        }
    }

    public void DeliverException(Exception exception)
    {
        Unregister();
        if (Inline)
        {
            InlineException = exception;
            return;
        }

        _core.RunContinuationsAsynchronously = true;
        _core.SetException(exception);
    }

    /// <summary>
    /// The caller's continuation reads the result. A success that reaches it after the deadline (its hand-over through
    /// the thread pool was slow) is answered DeadlineExceeded instead: a deadline-bound caller never sees a late answer.
    /// The check keeps a small margin (<see cref="ModelScheduler.ReadMargin"/>, at most 20 µs and never more than
    /// DeliveryMargin) because the caller reads its own clock after this one.
    /// </summary>
    public InferenceResponse GetResult(short token)
    {
        try
        {
            var response = _core.GetResult(token);
            long deadline = Deadline;
            if (deadline != long.MaxValue && response.IsSuccess)
            {
                long now = Owner.Time.GetTimestamp();
                if (now + Owner.ReadMargin > deadline)
                {
                    response = Owner.DiscardLate(this, response, now);
                }

                if (EndsAtRead)
                {
                    EndsAtRead = false;
                    Owner.EndAtRead(this, response, response.IsSuccess ? ReadyAt : now);
                }
            }

            return response;
        }
        finally
        {
            Recycle();
        }
    }

    /// <summary>
    /// Drops the cancellation callback as the answer goes out. It may not be registered yet (a batch answered the request
    /// before its admitting thread registered it); <see cref="Recycle"/> tries again then.
    /// </summary>
    private void Unregister()
    {
        if (Registration.Unregister())
        {
            _unregistered = true;
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);

    /// <summary>
    /// Clears references and returns the object to its scheduler's pool when that is safe: it never registered a
    /// cancellation callback, or one unregistration of it succeeded (the callback never ran and never will). A request
    /// whose callback ran (even synchronously inside its registration, which then returns an empty one), or runs now, was
    /// abandoned while queued or running and is left untouched to the garbage collector: the batch that took it may still
    /// be reading its inputs, and a stale queue entry may still point at it.
    /// </summary>
    public void Recycle()
    {
        if (_cancellationCallbackRan || !(Registration == default || _unregistered || Registration.Unregister()))
        {
            return;
        }

        Array.Clear(Inputs);
        Request = null!;
        WideOutputMask = null;
        InlineResult = null;
        InlineException = null;
        Registration = default;
        _unregistered = false;
        Token = default;
        Activity = null;
        _core.Reset();
        Owner.Return(this);
    }
}
