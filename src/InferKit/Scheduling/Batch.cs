using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tensors;

namespace InferKit.Scheduling;

/// <summary>
/// One batch: the requests it carries, their joined inputs, and the split of the outputs back into one response
/// per request. Pooled per scheduler; runs on the thread that calls <see cref="Run"/> (a caller running inline,
/// or a thread-pool worker through <see cref="IThreadPoolWorkItem"/>).
/// </summary>
internal sealed class Batch : IBackendOutputSink, IThreadPoolWorkItem
{
    private readonly ModelScheduler _owner;
    private readonly ModelSignature _signature;
    private readonly Tensor[] _inputs;
    private readonly byte[]?[] _rentedInputs;
    private readonly string[]?[] _rentedStrings;

    /// <summary>Per input, the longest length of each axis over the requests taken so far (axis 0 unused): the joined shape.</summary>
    private readonly long[][] _joinedDims;
    private PendingRequest[] _requests = new PendingRequest[8];
    private long[] _rowOffsets = new long[8];
    private InferenceResponse?[] _responses = new InferenceResponse?[8];

    /// <summary>
    /// Per output, the shape last given to a request's tensor of that output, handed out again while requests' shapes are
    /// equal (a tensor's shape is read-only): one array per output and shape, not one per request.
    /// </summary>
    private readonly long[]?[] _outputShapes;

    /// <summary>While one request of the batch runs alone (see <see cref="RunEachAlone"/>), its index: the sink answers it alone; else -1.</summary>
    private int _alone = -1;

    public Batch(ModelScheduler owner, ModelSignature signature)
    {
        _owner = owner;
        _signature = signature;
        _inputs = new Tensor[signature.Inputs.Count];
        _rentedInputs = new byte[]?[signature.Inputs.Count];
        _rentedStrings = new string[]?[signature.Inputs.Count];
        _joinedDims = new long[signature.Inputs.Count][];
        _outputShapes = new long[]?[signature.Outputs.Count];
        for (int i = 0; i < _joinedDims.Length; i++)
        {
            _joinedDims[i] = new long[signature.Inputs[i].Rank];
        }
    }

    public int Count { get; private set; }

    public int Rows { get; private set; }

    public ModelInstance? Instance { get; set; }

    /// <summary>How long the last successful run took, in seconds (0 when it failed).</summary>
    public double Seconds { get; private set; }

    /// <summary>
    /// The token of the one request an inline run carries (see <see cref="ModelScheduler.InferAsync"/>), passed to the
    /// backend so that its cancellation stops the run, whose caller waits on it; default for every other batch, whose
    /// requests are answered at once when cancelled while the run goes on for the rest.
    /// </summary>
    public CancellationToken RunToken { get; set; }

    public PendingRequest this[int index] => _requests[index];

    public void Add(PendingRequest request)
    {
        if (Count == _requests.Length)
        {
            int n = Count * 2;
            Array.Resize(ref _requests, n);
            Array.Resize(ref _rowOffsets, n);
            Array.Resize(ref _responses, n);
        }

        _rowOffsets[Count] = Rows;
        _requests[Count++] = request;
        Rows += request.Rows;
        Widen(request, Count == 1);
    }

    /// <summary>
    /// Removes the last request (used when cutting a batch to a preferred size, once it is formed). The joined shape
    /// <see cref="FitsJoined"/> reads is left as it was: at most too large, never too small.
    /// </summary>
    public PendingRequest RemoveLast()
    {
        var r = _requests[--Count];
        _requests[Count] = null!;
        Rows -= r.Rows;
        return r;
    }

    /// <summary>
    /// True when <paramref name="request"/> can join without any joined input outgrowing one buffer (<see cref="Array.MaxLength"/>
    /// bytes, or strings): with padding, one long request makes every row as long.
    /// </summary>
    public bool FitsJoined(PendingRequest request)
    {
        long rows = (long)Rows + request.Rows;
        for (int i = 0; i < _joinedDims.Length; i++)
        {
            var shape = request.Inputs[i].Shape;
            var joined = _joinedDims[i];
            long total = rows * Math.Max(1, _signature.Inputs[i].ElementType.SizeOf());
            bool empty = false;
            bool over = false;
            for (int d = 1; d < shape.Length; d++)
            {
                long dim = Math.Max(joined[d], shape[d]);
                if (dim == 0)
                {
                    empty = true;
                }
                else if (!over)
                {
                    over = total > Array.MaxLength / dim;
                    total = over ? total : total * dim;
                }
            }

            if (!empty && (over || total > Array.MaxLength))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Grows the joined shape to hold <paramref name="request"/> (or starts it from it).</summary>
    private void Widen(PendingRequest request, bool first)
    {
        for (int i = 0; i < _joinedDims.Length; i++)
        {
            var shape = request.Inputs[i].Shape;
            var joined = _joinedDims[i];
            for (int d = 1; d < joined.Length && d < shape.Length; d++)
            {
                joined[d] = first ? shape[d] : Math.Max(joined[d], shape[d]);
            }
        }
    }

    public bool Contains(PendingRequest request)
    {
        for (int i = 0; i < Count; i++)
        {
            if (ReferenceEquals(_requests[i], request))
            {
                return true;
            }
        }

        return false;
    }

    void IThreadPoolWorkItem.Execute()
    {
        _owner.RunBatch(this);
        _owner.HandOff();
    }

    /// <summary>
    /// Joins the inputs, runs them (retrying once on another instance after a failure, or, when the outputs cannot be
    /// split back into the requests, running each request again alone) and answers every request.
    /// </summary>
    public void Run()
    {
        long started = _owner.Time.GetTimestamp();
        Activity? saved = null;
        var span = _owner.Telemetry?.BatchStarted(this, started, out saved);
        if (span is null)
        {
            RunCore(started, null);
            return;
        }

        Exception? error = null;
        try
        {
            error = RunCore(started, span);
        }
        finally
        {
            ModelTelemetry.BatchEnded(span, saved, Instance!, error);
        }
    }

    /// <summary>
    /// The run itself; returns the error every request was failed with, or, when the joined outputs could not be split
    /// and each request ran again alone, that joined run's error (each request then got its own answer), or the
    /// cancellation that stopped the run (see <see cref="RunToken"/>); else null.
    /// </summary>
    private Exception? RunCore(long started, Activity? span)
    {
        var hooks = _owner;
        var time = _owner.Time;
        var pool = _owner.Pool;
        var health = _owner.Health;
        var token = RunToken;
        bool reserved = true;
        bool alone = false;
        bool cancelled = false;
        long ended = 0;
        Exception? error = null;
        double seconds = 0;
        var instance = Instance!;
        try
        {
            PrepareInputs(_owner.Padding);
            for (int attempt = 0; ; attempt++)
            {
                PrepareResponses();
                bool wasOut = instance.OutUntilTimestamp != 0;
                long t0 = time.GetTimestamp();
                int watched = instance.RunStarted(t0);
                bool ok;
                try
                {
                    instance.Backend.Run(_inputs, this, token);
                    ok = true;
                    error = null;
                }
                catch (Exception ex)
                {
                    ok = false;
                    error = ex;
                }

                bool stuck = instance.RunEnded(watched);

                // The answers are ready when the run ends: read the clock before the instance is released, so a batch that
                // starts on it next cannot come between (it would delay this batch's answer time, not its answers).
                ended = time.GetTimestamp();
                seconds = time.GetElapsedTime(t0, ended).TotalSeconds;
                if (!ok && error is OperationCanceledException && token.IsCancellationRequested)
                {
                    // Stopped by its caller: neither a failure of the instance nor a run to measure, and not retried.
                    cancelled = true;
                    reserved = false;
                    instance.ReleaseUnrun(Rows);
                    break;
                }

                bool slow = IsSlow(seconds);

                // Outputs that cannot be cut into requests fault the model, not this instance: it ran, and another would fail alike.
                bool unsplittable = error is UnsplittableOutputException;

                // A joined run that failed may have failed for one request's data (a token id out of range): then each
                // request runs again alone on this instance, so that only a request that fails alone gets the error. The
                // same when its outputs could not be cut into requests. A hold is kept on the instance for that, taken
                // before this run's reservation is released so that an unload cannot close the instance in between; it is
                // given back if the joined run is retried on another instance instead.
                alone = !ok && Count > 1;
                if (alone)
                {
                    instance.ReserveAgain();
                }

                reserved = false;
                Account(instance, Rows, seconds, ok, unsplittable, slow, wasOut, stuck);

                if (ok)
                {
                    Seconds = seconds;
                    _owner.Latency.Record(Rows, seconds);
                    hooks.BatchCompleted(instance, Rows, seconds);
                    break;
                }

                DiscardResponses();
                if (error is UnsplittableOutputException { AxisZeroIsNotBatch: true } notBatch)
                {
                    // A fact of the model version, not of these requests: it stops joining requests, and says so once.
                    hooks.StopJoining(notBatch);
                }
                else
                {
                    hooks.BatchFailed(instance, Rows, error!);
                }

                if (attempt == 0 && !unsplittable && health.RetryOnAnotherInstance && pool.TryAcquireAny(instance, out var other))
                {
                    if (alone)
                    {
                        alone = false;
                        instance.Unreserve();
                    }

                    ModelTelemetry.BatchRetried(span, instance, error!);
                    instance = other;
                    Instance = other;
                    instance.AddRows(Rows);
                    reserved = true;
                    continue;
                }

                break;
            }
        }
        catch (Exception ex)
        {
            // Joining the inputs failed (should not happen for validated requests); answer everyone with the error. Nothing
            // ran: the reservation is released without an outcome, neither a success (which would clear the instance's
            // failures, or bring it back from its back-off) nor a failure (the instance is not at fault).
            error = ex;
            if (reserved)
            {
                instance.ReleaseUnrun(Rows);
            }

            if (alone)
            {
                alone = false;
                instance.Unreserve();
            }

            DiscardResponses();
        }
        finally
        {
            ReleaseInputs();
        }

        if (alone)
        {
            // The joined run's failure stays on the batch span; each request has its own answer from its own run.
            RunEachAlone(instance, started);
            return error;
        }

        if (cancelled || (error is null && token.IsCancellationRequested))
        {
            // Stopped by the cancellation, or cancelled while it ran though the run finished: the caller is answered as
            // cancelled, as a queued request cancelled while its batch runs is.
            DiscardResponses();
            for (int j = 0; j < Count; j++)
            {
                hooks.CancelRunning(_requests[j]);
            }

            return error;
        }

        long now = ended != 0 ? ended : time.GetTimestamp();
        for (int j = 0; j < Count; j++)
        {
            var request = _requests[j];
            if (error is null)
            {
                Answer(j, instance, Rows, started, seconds, now);
            }
            else
            {
                hooks.Fail(request, new InferenceFailedException(hooks.ModelName, instance.Id, error));
            }
        }

        return error;
    }

    /// <summary>
    /// Answers request <paramref name="j"/> from its outputs of a successful run of <paramref name="rows"/> rows on
    /// <paramref name="instance"/> that started at <paramref name="started"/> and took <paramref name="seconds"/>.
    /// </summary>
    private void Answer(int j, ModelInstance instance, int rows, long started, double seconds, long now)
    {
        var request = _requests[j];
        var response = _responses[j]!;
        _responses[j] = null;
        response.Instance = instance.Id;
        response.AnsweredBy = response.Model;
        response.BatchSize = rows;
        response.QueueTime = _owner.Time.GetElapsedTime(request.Enqueued, started);
        response.ComputeTime = TimeSpan.FromSeconds(seconds);
        _owner.Complete(request, response, now);
    }

    /// <summary>A run longer than the health options' RunTimeout: it counts against its instance, though it was answered.</summary>
    private bool IsSlow(double seconds) => _owner.Health.RunTimeout is TimeSpan limit && seconds > limit.TotalSeconds;

    /// <summary>
    /// Releases the reservation of one run with its outcome (instance health, latency), and reports a change of rotation.
    /// <paramref name="stuck"/>: the watchdog took the instance out while this run ran (see <see cref="ModelInstance.TryTakeOutStuck"/>).
    /// </summary>
    private void Account(ModelInstance instance, int rows, double seconds, bool ok, bool unsplittable, bool slow, bool wasOut, bool stuck)
    {
        if (instance.Complete(rows, seconds, failed: !ok && !unsplittable, slow, takenOutWhileRunning: stuck))
        {
            _owner.InstanceTakenOut(instance);
        }
        else if (wasOut && (ok || unsplittable) && !slow && instance.OutUntilTimestamp == 0)
        {
            _owner.InstanceRestored(instance);
        }
    }

    /// <summary>
    /// The joined run failed (after its retry on another instance, if any), or its outputs could not be split back into
    /// its requests (<see cref="UnsplittableOutputException"/>): each request runs again alone, one after another on
    /// <paramref name="instance"/> (which this batch holds one reservation on, released by the last run), and is answered
    /// from its own run: its result, or the error its run alone ended with. So a request whose data makes the model fail
    /// fails alone, and the requests it was joined with are answered. Bounded: one run per request, not retried (a
    /// request alone is never split). A request cancelled meanwhile is not run; one whose deadline passed during the runs before it is answered
    /// DeadlineExceeded without running. Each successful run is measured as a batch of its own rows.
    /// </summary>
    private void RunEachAlone(ModelInstance instance, long started)
    {
        var hooks = _owner;
        var time = _owner.Time;
        int outputs = _signature.Outputs.Count;
        for (int j = 0; j < Count; j++)
        {
            var request = _requests[j];
            bool last = j == Count - 1;
            int rows = request.Rows;
            long now = time.GetTimestamp();
            if (request.State != PendingRequest.Running || now >= request.Deadline)
            {
                // Not run: cancelled (its caller has its answer), or too late for the answer to be used.
                hooks.ExpireUnrun(request, now);
                if (last)
                {
                    instance.Unreserve();
                }

                continue;
            }

            _alone = j;
            request.Inputs.CopyTo(_inputs, 0);
            PrepareResponse(j, outputs);
            instance.AddRows(rows);
            bool wasOut = instance.OutUntilTimestamp != 0;
            long t0 = time.GetTimestamp();
            int watched = instance.RunStarted(t0);
            Exception? error = null;
            try
            {
                instance.Backend.Run(_inputs, this, CancellationToken.None);
            }
            catch (Exception ex)
            {
                error = ex;
            }

            bool stuck = instance.RunEnded(watched);

            long ended = time.GetTimestamp();
            _alone = -1;
            Array.Clear(_inputs);
            double seconds = time.GetElapsedTime(t0, ended).TotalSeconds;
            bool slow = IsSlow(seconds);
            if (!last)
            {
                instance.ReserveAgain(); // the hold for the next request's run
            }

            Account(instance, rows, seconds, error is null, unsplittable: false, slow, wasOut, stuck);
            if (error is null)
            {
                _owner.Latency.Record(rows, seconds);
                hooks.BatchCompleted(instance, rows, seconds);
                Answer(j, instance, rows, started, seconds, ended);
            }
            else
            {
                _responses[j]?.Dispose();
                _responses[j] = null;
                hooks.BatchFailed(instance, rows, error);
                hooks.Fail(request, new InferenceFailedException(hooks.ModelName, instance.Id, error));
            }
        }
    }

    public void Reset()
    {
        Array.Clear(_requests, 0, Count);
        Array.Clear(_responses, 0, Count);
        Count = 0;
        Rows = 0;
        Seconds = 0;
        Instance = null;
        RunToken = default;
    }

    public void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data)
    {
        var name = CheckOutput(outputIndex, elementType, shape, data.Length);
        if (Count == 1 || _alone >= 0)
        {
            int only = Math.Max(_alone, 0);
            if (Wants(only, outputIndex))
            {
                var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, data.Length));
                data.CopyTo(buffer);
                _responses[only]!.AddPooledOutput(Tensor.Wrap(name, elementType, SharedShape(outputIndex, shape), buffer, data.Length));
            }

            return;
        }

        CheckRows(name, shape);
        int size = elementType.SizeOf();
        var trims = _owner.Padding.OutputTrims[outputIndex];
        CheckTrims(outputIndex, shape, trims);
        for (int j = 0; j < Count; j++)
        {
            if (!Wants(j, outputIndex))
            {
                continue;
            }

            var own = OwnShape(j, outputIndex, shape, trims);
            int bytes = checked((int)(Tensor.ElementCountOf(own) * size));
            var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, bytes));
            BatchTensorOps.CopyBox(data, shape, _rowOffsets[j], buffer, own, 0, own, size);
            _responses[j]!.AddPooledOutput(Tensor.Wrap(name, elementType, own, buffer, bytes));
        }
    }

    public void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data)
    {
        var name = CheckOutput(outputIndex, TensorElementType.String, shape, data.Length);
        if (Count == 1 || _alone >= 0)
        {
            int only = Math.Max(_alone, 0);
            if (Wants(only, outputIndex))
            {
                var buffer = ArrayPool<string>.Shared.Rent(Math.Max(1, data.Length));
                data.CopyTo(buffer);
                _responses[only]!.AddPooledOutput(Tensor.WrapStrings(name, SharedShape(outputIndex, shape), buffer, data.Length));
            }

            return;
        }

        CheckRows(name, shape);
        var trims = _owner.Padding.OutputTrims[outputIndex];
        CheckTrims(outputIndex, shape, trims);
        for (int j = 0; j < Count; j++)
        {
            if (!Wants(j, outputIndex))
            {
                continue;
            }

            var own = OwnShape(j, outputIndex, shape, trims);
            int count = checked((int)Tensor.ElementCountOf(own));
            var buffer = ArrayPool<string>.Shared.Rent(Math.Max(1, count));
            BatchTensorOps.CopyBox(data, shape, _rowOffsets[j], buffer, own, 0, own);
            _responses[j]!.AddPooledOutput(Tensor.WrapStrings(name, own, buffer, count));
        }
    }

    private bool Wants(int request, int output)
    {
        var r = _requests[request];
        return r.WideOutputMask is { } wide
            ? (wide[output >> 6] & (1UL << (output & 63))) != 0
            : output >= 64 || (r.OutputMask & (1UL << output)) != 0; // past 64 outputs, a request without a wide mask wants them all
    }

    private long[] OwnShape(int j, int outputIndex, ReadOnlySpan<long> shape, (int Axis, int Input, int InputAxis)[] trims)
    {
        Span<long> own = shape.Length <= 16 ? stackalloc long[shape.Length] : new long[shape.Length];
        shape.CopyTo(own);
        own[0] = _requests[j].Rows;
        foreach (var (axis, input, inputAxis) in trims)
        {
            own[axis] = Math.Min(own[axis], _requests[j].Inputs[input].Shape[inputAxis]);
        }

        return SharedShape(outputIndex, own);
    }

    /// <summary>The shape as an array for a response tensor: the one last handed out for this output when equal, else a copy kept for the next.</summary>
    private long[] SharedShape(int outputIndex, ReadOnlySpan<long> shape)
    {
        var last = _outputShapes[outputIndex];
        if (last is not null && shape.SequenceEqual(last))
        {
            return last;
        }

        var copy = shape.ToArray();
        _outputShapes[outputIndex] = copy;
        return copy;
    }

    /// <summary>
    /// Checks what a backend handed the sink: one of the model's outputs, whose data fills its shape exactly (a response
    /// tensor's shape always matches its data). <paramref name="length"/> counts bytes of a numeric output, elements of a
    /// string output. Returns the output's name.
    /// </summary>
    private string CheckOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, int length)
    {
        var outputs = _signature.Outputs;
        if ((uint)outputIndex >= (uint)outputs.Count)
        {
            throw new InvalidOperationException(
                $"Model '{_owner.ModelName}': the backend returned output number {outputIndex}, but the model has {outputs.Count} output(s).");
        }

        var name = outputs[outputIndex].Name;
        long elements = Tensor.ElementCountOf(shape);
        if (elementType == TensorElementType.String)
        {
            if (elements != length)
            {
                throw new InvalidOperationException(
                    $"Model '{_owner.ModelName}': the backend returned output '{name}' with shape {Tensor.FormatShape(shape)} ({elements} elements) but {length} strings.");
            }

            return name;
        }

        int size = elementType.SizeOf();
        if (size == 0 || elements < 0 || elements > int.MaxValue / size || elements * size != length)
        {
            throw new InvalidOperationException(
                $"Model '{_owner.ModelName}': the backend returned output '{name}' as {elementType} with shape {Tensor.FormatShape(shape)} ({elements} elements) but {length} bytes of data.");
        }

        return name;
    }

    /// <summary>Every axis padding cuts back per request must be one the output has.</summary>
    private void CheckTrims(int outputIndex, ReadOnlySpan<long> shape, (int Axis, int Input, int InputAxis)[] trims)
    {
        foreach (var (axis, _, _) in trims)
        {
            if (axis >= shape.Length)
            {
                var spec = _signature.Outputs[outputIndex];
                throw new UnsplittableOutputException(
                    $"Model '{_owner.ModelName}': output '{spec.Name}' has shape {Tensor.FormatShape(shape)}, but the model declares {spec} and padding cuts its axis {axis} back to each request's length.");
            }
        }
    }

    private void CheckRows(string name, ReadOnlySpan<long> shape)
    {
        if (shape.Length == 0 || shape[0] != Rows)
        {
            throw new UnsplittableOutputException(
                $"Model '{_owner.ModelName}': output '{name}' has shape {Tensor.FormatShape(shape)} for a batch of {Rows} rows; its axis 0 is not a batch axis. Set ModelOptions.AxisZeroIsBatch = false to run one request at a time.",
                axisZeroIsNotBatch: true);
        }
    }

    private void PrepareResponses()
    {
        int outputs = _signature.Outputs.Count;
        for (int j = 0; j < Count; j++)
        {
            PrepareResponse(j, outputs);
        }
    }

    private void PrepareResponse(int j, int outputs)
    {
        var r = _requests[j];
        var response = new InferenceResponse(_owner.ModelName, _owner.Version, r.Request.Id);
        response.PrepareOutputs(r.WideOutputMask is { } wide ? PopCount(wide) : r.OutputMask == ulong.MaxValue ? outputs : BitOperations.PopCount(r.OutputMask));
        _responses[j] = response;
    }

    private static int PopCount(ulong[] mask)
    {
        int n = 0;
        foreach (var word in mask)
        {
            n += BitOperations.PopCount(word);
        }

        return n;
    }

    private void DiscardResponses()
    {
        for (int j = 0; j < Count; j++)
        {
            _responses[j]?.Dispose();
            _responses[j] = null;
        }
    }

    private void PrepareInputs(PaddingPlan padding)
    {
        _owner.BeforeJoin?.Invoke(this);
        var first = _requests[0].Inputs;
        if (Count == 1)
        {
            first.CopyTo(_inputs, 0);
            return;
        }

        var specs = _signature.Inputs;
        for (int i = 0; i < specs.Count; i++)
        {
            var firstShape = first[i].Shape;
            var shape = new long[firstShape.Length];
            shape[0] = Rows;
            bool ragged = false;
            for (int d = 1; d < shape.Length; d++)
            {
                long max = firstShape[d];
                for (int j = 1; j < Count; j++)
                {
                    long dim = _requests[j].Inputs[i].Shape[d];
                    if (dim != max)
                    {
                        ragged = true;
                        max = Math.Max(max, dim);
                    }
                }

                shape[d] = max;
            }

            var type = specs[i].ElementType;
            if (type == TensorElementType.String)
            {
                int count = checked((int)Tensor.ElementCountOf(shape));
                var buffer = ArrayPool<string>.Shared.Rent(Math.Max(1, count));

                // Recorded as soon as rented: a copy below that throws leaves it to ReleaseInputs, which returns it once.
                _rentedStrings[i] = buffer;
                if (ragged)
                {
                    buffer.AsSpan(0, count).Fill(string.Empty);
                }

                for (int j = 0; j < Count; j++)
                {
                    var t = _requests[j].Inputs[i];
                    BatchTensorOps.CopyBox(t.GetStrings(), t.Shape, 0, buffer, shape, _rowOffsets[j], t.Shape);
                }

                _inputs[i] = Tensor.WrapStrings(specs[i].Name, shape, buffer, count);
            }
            else
            {
                int size = type.SizeOf();
                int bytes = checked((int)(Tensor.ElementCountOf(shape) * size));
                var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, bytes));
                _rentedInputs[i] = buffer; // as for strings above
                if (ragged)
                {
                    BatchTensorOps.Fill(buffer.AsSpan(0, bytes), padding.PadValues[i]);
                }

                for (int j = 0; j < Count; j++)
                {
                    var t = _requests[j].Inputs[i];
                    BatchTensorOps.CopyBox(t.RawBytes, t.Shape, 0, buffer, shape, _rowOffsets[j], t.Shape, size);
                }

                _inputs[i] = Tensor.Wrap(specs[i].Name, type, shape, buffer, bytes);
            }
        }
    }

    private void ReleaseInputs()
    {
        for (int i = 0; i < _inputs.Length; i++)
        {
            if (_rentedInputs[i] is { } b)
            {
                ArrayPool<byte>.Shared.Return(b);
                _rentedInputs[i] = null;
            }

            if (_rentedStrings[i] is { } s)
            {
                ArrayPool<string>.Shared.Return(s, clearArray: true);
                _rentedStrings[i] = null;
            }

            _inputs[i] = default;
        }
    }
}

/// <summary>
/// A joined batch's output cannot be cut back into its requests (its axis 0 is not the batch, or it lacks an axis that
/// padding cuts back): a fault of the model or its configuration, not of the instance that ran it. The batch's requests
/// then run again one at a time (a request alone is never cut), each answered from its own run.
/// </summary>
internal sealed class UnsplittableOutputException(string message, bool axisZeroIsNotBatch = false) : InvalidOperationException(message)
{
    /// <summary>
    /// True when an output's axis 0 did not follow the batch's rows: a fact of the model version (a batch axis always
    /// does), so no joined batch of it can be trusted to split, and its scheduler stops joining requests. False when an
    /// output lacks an axis that padding cuts back, which can depend on the requests (an output whose rank follows its
    /// data): only this batch runs again request by request.
    /// </summary>
    public bool AxisZeroIsNotBatch { get; } = axisZeroIsNotBatch;
}
