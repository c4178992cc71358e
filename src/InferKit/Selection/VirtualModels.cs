using System.Buffers;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using InferKit.Models;
using InferKit.Telemetry;
using InferKit.Tensors;

namespace InferKit.Selection;

/// <summary>What every virtual model shares.</summary>
internal static class VirtualModel
{
    /// <summary>A virtual model's one version: the only one it describes and accepts, and the one its answers name.</summary>
    public const string Version = "1";
}

/// <summary>A model name that is served by routing to registered models (a cascade, an adaptive model).</summary>
internal interface IVirtualModel
{
    string Name { get; }

    /// <summary>"cascade" or "adaptive".</summary>
    string Kind { get; }

    /// <summary>The real models it routes to.</summary>
    IReadOnlyList<string> Members { get; }

    /// <summary>How messages name member <paramref name="index"/>: "stage 2 ('large')", "variant 'large'".</summary>
    string DescribeMember(int index);

    ValueTask<InferenceResponse> InferAsync(InferenceRequest request, CancellationToken cancellationToken);
}

/// <summary>Instruments of cascades and adaptive selection, on InferKit's meter.</summary>
internal sealed class SelectionMetrics
{
    /// <summary>Tag of the cascade counters: the 1-based stage.</summary>
    public const string StageTag = "inferkit.cascade.stage";

    public SelectionMetrics(Meter meter)
    {
        CascadeRows = meter.CreateCounter<long>("inferkit.cascade.rows", "{row}", "Rows of answered requests, by the cascade stage whose answer the caller got.");
        Escalations = meter.CreateCounter<long>("inferkit.cascade.escalations", "{row}", "Rows a cascade stage sent on to the next.");
        Fallbacks = meter.CreateCounter<long>("inferkit.cascade.fallbacks", "{row}",
            "Rows a later cascade stage could not answer (refused, missed its deadline, or failed) that kept the previous stage's answer, by that later stage and its outcome.");
        VariantChosen = meter.CreateCounter<long>("inferkit.adaptive.requests", "{request}", "Requests per chosen variant of an adaptive model.");
        StepDowns = meter.CreateCounter<long>("inferkit.adaptive.step_downs", "{request}", "Requests an adaptive model sent to a less accurate variant than its most accurate one.");
    }

    public Counter<long> CascadeRows { get; }

    public Counter<long> Escalations { get; }

    /// <summary>Rows that kept an earlier stage's answer because the stage they were sent to could not answer them.</summary>
    public Counter<long> Fallbacks { get; }

    public Counter<long> VariantChosen { get; }

    public Counter<long> StepDowns { get; }
}

/// <summary>Row-level helpers shared by the virtual models.</summary>
internal static class RowOps
{
    public static int RowsOf(InferenceRequest request) => request.InputArray.Length == 0 || request.InputArray[0].Rank == 0 ? 1 : (int)request.InputArray[0].Shape[0];

    /// <summary>True when every input has an axis 0 and they agree on its length (a request that could be split by rows).</summary>
    public static bool HasRowAxis(InferenceRequest request)
    {
        var inputs = request.InputArray;
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i].Rank == 0 || inputs[i].Shape[0] != inputs[0].Shape[0])
            {
                return false;
            }
        }

        return inputs.Length > 0;
    }

    /// <summary>
    /// A request with the same settings and an absolute deadline fixed at <paramref name="deadline"/>; a caller's
    /// "no timeout at all" carries over, so a member's default timeout does not cut it short. With
    /// <paramref name="asCaller"/> the member's answer goes to the caller as it is, so the caller's requested outputs and
    /// continuation choice carry over too; without it (a cascade stage) the member returns every output, which the
    /// acceptance rule reads.
    /// </summary>
    public static InferenceRequest WithInputs(InferenceRequest original, Tensor[] inputs, DateTimeOffset? deadline, bool asCaller = false) => new(inputs)
    {
        Id = original.Id,
        Priority = original.Priority,
        Deadline = deadline,
        Timeout = RequestChecks.ForMember(original),
        RequestedOutputs = asCaller ? original.RequestedOutputs : null,
        AllowSynchronousContinuation = asCaller && original.AllowSynchronousContinuation,
    };

    /// <summary>Copies the selected rows of a tensor into a new tensor.</summary>
    public static Tensor TakeRows(Tensor tensor, ReadOnlySpan<int> rows)
    {
        var shape = tensor.Shape.ToArray();
        long total = shape[0];
        shape[0] = rows.Length;
        if (tensor.ElementType == TensorElementType.String)
        {
            var src = tensor.GetStrings();
            int per = total == 0 ? 0 : (int)(src.Length / total);
            var dst = new string[rows.Length * per];
            for (int i = 0; i < rows.Length; i++)
            {
                src.Slice(rows[i] * per, per).CopyTo(dst.AsSpan(i * per));
            }

            return Tensor.Create(tensor.Name, dst, shape);
        }

        var bytes = tensor.Bytes;
        int rowBytes = total == 0 ? 0 : (int)(bytes.Length / total);
        var copy = new byte[rows.Length * rowBytes];
        for (int i = 0; i < rows.Length; i++)
        {
            bytes.Slice(rows[i] * rowBytes, rowBytes).CopyTo(copy.AsSpan(i * rowBytes));
        }

        return Tensor.FromBytes(tensor.Name, tensor.ElementType, copy, shape);
    }
}

/// <summary>
/// A cascade: every request runs on stage 1; its rows that the stage's acceptance rule accepts are final, the rest
/// go on to the next stage as one smaller request (which the next model's scheduler batches with other traffic).
/// </summary>
/// <remarks>
/// <para>
/// Rows are taken along the batch axis that stage 1's signature declares (<see cref="Backends.ModelSignature.IsBatchable"/>).
/// A model without one (an input that is a scalar, a fixed first dimension, <c>AxisZeroIsBatch = false</c>) takes each
/// request as a single item: the acceptance rule reads stage 1's whole score output as that item's scores, an item it
/// rejects goes on to the next stage with its inputs as they came, and the caller gets the answering stage's outputs whole.
/// </para>
/// <para>
/// A later stage that cannot answer the rows sent to it (it refuses, misses its deadline, or fails: its backend throws)
/// leaves the earlier stage's answer for those rows: the response succeeds, <see cref="InferenceResponse.RowStages"/>
/// and <see cref="InferenceResponse.Stage"/> say which stage answered each row, <see cref="InferenceResponse.Note"/>
/// says which stage could not answer and why, and <c>inferkit.cascade.fallbacks</c> counts those rows. That earlier
/// answer is returned only while the caller still wants it: a request whose token was cancelled ends cancelled, and one
/// whose own deadline (its timeout or deadline) has passed, or is closer than the delivery margin
/// (<see cref="Scheduling.BatchingOptions.DeliveryMargin"/>, the largest among the stages whose answers it would be given),
/// ends <see cref="InferenceStatus.DeadlineExceeded"/>, as a real model never hands an answer over that late. Stage 1's
/// refusals, deadline misses and errors are the request's own. A stage 1 that is not loaded yet is waited for as a
/// direct call to it would wait: with a deadline, only until the deadline less stage 1's delivery margin; then the
/// request is refused (<see cref="RefusalReason.ModelNotReady"/>) while the load goes on. A later stage that is not
/// loaded yet, loading or failed to load refuses at once (its load starts, goes on or is retried in the background)
/// rather than make the request wait for the load.
/// </para>
/// <para>
/// <c>inferkit.cascade.rows</c> counts each row of an answered request once, under the stage whose answer the caller
/// got; <c>inferkit.cascade.escalations</c> counts the rows each stage sent on, whatever became of them.
/// </para>
/// </remarks>
internal sealed class CascadeModel(string name, CascadeOptions options, ModelRegistry registry, TimeProvider time, SelectionMetrics metrics) : IVirtualModel
{
    private readonly CascadeStage[] _stages = options.Stages.ToArray();

    /// <summary>
    /// [s]: the largest delivery margin among stages 1..s (0-based 0..s-1), the stages whose answers a request that stage
    /// s + 1 could not answer is given: a fallback keeps the same margin before the deadline that those stages' own
    /// answers keep, so it is never handed over late.
    /// </summary>
    private readonly TimeSpan[] _fallbackMargin = Enumerable.Range(0, options.Stages.Count)
        .Select(s => registry.LargestDeliveryMargin(options.Stages.Take(s).Select(static stage => stage.Model)))
        .ToArray();

    public string Name { get; } = name;

    public string Kind => "cascade";

    public IReadOnlyList<string> Members { get; } = options.Stages.Select(static s => s.Model).ToArray();

    public string DescribeMember(int index) => $"stage {index + 1} ('{_stages[index].Model}')";

    public async ValueTask<InferenceResponse> InferAsync(InferenceRequest request, CancellationToken cancellationToken)
    {
        RequestChecks.Check(Name, request);
        DateTimeOffset? deadline = Deadline(request);
        var stageResponses = new List<InferenceResponse>(_stages.Length);

        // Set from stage 1's answer: whether the request is judged row by row (stage 1 has a batch axis) or whole.
        bool byRows = false;
        int rows = 0;
        int[] answerStage = [];
        int[] answerRow = [];
        int[] current = [];
        var stageRequest = RowOps.WithInputs(request, request.InputArray, deadline);

        // Set when a later stage could not answer the rows sent to it: that stage (0-based), how it ended, and why.
        int missedStage = -1;
        string? missedOutcome = null;
        string? missedWhy = null;
        try
        {
            for (int s = 0; s < _stages.Length; s++)
            {
                InferenceResponse response;
                try
                {
                    // Stage 1 is called as the model itself would be (its load is waited for only while the deadline
                    // allows); a later stage that is not loaded yet, loading or failed to load refuses at once instead
                    // of making the request wait for the load, since stage 1's answer stands.
                    response = s == 0
                        ? await registry.InferRealAsync(_stages[s].Model, null, stageRequest, cancellationToken).ConfigureAwait(false)
                        : await registry.InferMemberAsync(_stages[s].Model, stageRequest, cancellationToken).ConfigureAwait(false);
                }
                catch (InferenceFailedException ex) when (s > 0)
                {
                    // The stage's backend failed; the rows keep the previous stage's answer (unless the caller is gone, below).
                    missedStage = s;
                    missedOutcome = TelemetryNames.Outcome(InferenceOutcome.Error);
                    missedWhy = $"failed: {ex.Message}";
                    break;
                }

                if (!response.IsSuccess)
                {
                    if (s == 0)
                    {
                        response.RenameTo(Name, VirtualModel.Version);
                        return response;
                    }

                    // Keep the previous stage's answers for the rows that could not escalate.
                    missedStage = s;
                    missedOutcome = TelemetryNames.Outcome(response.Status == InferenceStatus.DeadlineExceeded ? InferenceOutcome.DeadlineExceeded : InferenceOutcome.Refused);
                    missedWhy = $"could not answer ({response.Status} {response.RefusalReason}): {response.Message}";
                    response.Dispose();
                    break;
                }

                stageResponses.Add(response);
                if (s == 0)
                {
                    CheckRequestedOutputs(request, response);

                    // Rows exist only along a batch axis: a model without one (a scalar input, a fixed first dimension,
                    // AxisZeroIsBatch = false) takes each request as one item, judged and sent on whole.
                    byRows = registry.IsBatchable(_stages[0].Model) ?? RowOps.HasRowAxis(request);
                    rows = byRows ? RowOps.RowsOf(request) : 1;
                    answerStage = new int[rows];
                    answerRow = new int[rows];
                    current = Enumerable.Range(0, rows).ToArray();
                }

                for (int k = 0; k < current.Length; k++)
                {
                    answerStage[current[k]] = s;
                    answerRow[current[k]] = k;
                }

                if (s == _stages.Length - 1)
                {
                    break;
                }

                int[] rejected;
                try
                {
                    rejected = Judge(_stages[s], response, current);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // A custom rule is user code: its failure names the cascade and the stage whose answer it judged.
                    throw new InvalidOperationException(
                        string.Create(CultureInfo.InvariantCulture, $"Cascade '{Name}': the acceptance rule of stage {s + 1} ('{_stages[s].Model}') failed: {ex.GetType().Name}: {ex.Message}"), ex);
                }

                if (rejected.Length == 0)
                {
                    break;
                }

                Record(metrics.Escalations, rejected.Length, s);
                var rejectedLocal = new int[rejected.Length];
                for (int i = 0; i < rejected.Length; i++)
                {
                    rejectedLocal[i] = Array.IndexOf(current, rejected[i]);
                }

                var inputs = stageRequest.InputArray;
                if (byRows)
                {
                    inputs = new Tensor[stageRequest.InputArray.Length];
                    for (int i = 0; i < inputs.Length; i++)
                    {
                        inputs[i] = RowOps.TakeRows(stageRequest.InputArray[i], rejectedLocal);
                    }
                }

                stageRequest = RowOps.WithInputs(request, inputs, deadline);
                current = rejected;
            }

            string? note = null;
            if (missedStage > 0)
            {
                // The earlier answer stands only for a caller that still waits for it, within its deadline.
                cancellationToken.ThrowIfCancellationRequested();
                string stage = $"Stage {missedStage + 1} ('{_stages[missedStage].Model}')";
                if (deadline is DateTimeOffset d)
                {
                    // As a model's own answer, the earlier answer must reach the caller before the deadline with the
                    // delivery margin kept in hand; one later than that would be handed over late.
                    var now = time.GetUtcNow();
                    var margin = _fallbackMargin[missedStage];
                    if (now >= d)
                    {
                        DisposeAll(stageResponses);
                        return InferenceResponse.Expired(Name, request.Id,
                            $"Cascade '{Name}': the request's deadline passed before the rows it sent on were answered; stage {missedStage}'s answer for them was discarded rather than answered late. {stage} {missedWhy}");
                    }

                    if (now + margin > d)
                    {
                        DisposeAll(stageResponses);
                        return InferenceResponse.Expired(Name, request.Id, string.Create(CultureInfo.InvariantCulture,
                            $"Cascade '{Name}': the rows it sent on were not answered until {(d - now).TotalMilliseconds:F1} ms before the request's deadline, within the {margin.TotalMilliseconds:F1} ms delivery margin; stage {missedStage}'s answer for them was discarded rather than risk a late answer. {stage} {missedWhy}"));
                    }
                }

                note = $"{stage} {missedWhy} Stage {missedStage} answered those rows.";
            }

            var answer = Assemble(request, stageResponses, answerStage, answerRow, rows, byRows, note);
            RecordAnswered(answerStage, missedStage, missedOutcome, current.Length);
            return answer;
        }
        catch
        {
            DisposeAll(stageResponses);
            throw;
        }
    }

    /// <summary>
    /// Outputs the caller asked for must be outputs of the stages (which return the same ones): checked on stage 1's
    /// answer, before any row goes on, as a real model checks them at admission.
    /// </summary>
    /// <exception cref="InvalidInferenceRequestException">An unknown requested output, with the outputs there are.</exception>
    private void CheckRequestedOutputs(InferenceRequest request, InferenceResponse first)
    {
        if (request.RequestedOutputs is not { Count: > 0 } requested)
        {
            return;
        }

        foreach (var name in requested)
        {
            if (!first.TryGetOutput(name, out _))
            {
                throw new InvalidInferenceRequestException(Name, null,
                    $"Model '{Name}': unknown requested output '{name}'. Its stages return {string.Join(", ", first.Outputs.Select(static t => t.Name))}.");
            }
        }
    }

    private static void DisposeAll(List<InferenceResponse> responses)
    {
        foreach (var r in responses)
        {
            r.Dispose();
        }

        responses.Clear();
    }

    private static int[] Judge(CascadeStage stage, InferenceResponse response, int[] current)
    {
        var rule = stage.Acceptance!;
        var scores = FindScores(response, rule.Output);
        int rows = current.Length;
        var values = scores.GetSpan<float>();
        int width = rows == 0 ? 0 : values.Length / rows;
        var rejected = new List<int>();
        for (int k = 0; k < rows; k++)
        {
            if (!rule.Accept(values.Slice(k * width, width)))
            {
                rejected.Add(current[k]);
            }
        }

        return rejected.ToArray();
    }

    private static Tensor FindScores(InferenceResponse response, string? output)
    {
        if (output is not null)
        {
            return response[output];
        }

        foreach (var t in response.Outputs)
        {
            if (t.ElementType == TensorElementType.Float32)
            {
                return t;
            }
        }

        throw new InvalidOperationException($"Model '{response.AnsweredBy ?? response.Model}' has no float32 output for the cascade's acceptance rule.");
    }

    /// <summary>
    /// The caller's answer from the stages' answers: row r from stage answerStage[r], its row answerRow[r]. Without
    /// <paramref name="byRows"/> the request is one item (rows = 1) and each output is the answering stage's whole.
    /// </summary>
    private InferenceResponse Assemble(InferenceRequest request, List<InferenceResponse> responses, int[] answerStage, int[] answerRow, int rows, bool byRows, string? note)
    {
        var requested = request.RequestedOutputs;
        var first = responses[0];
        bool allFirst = Array.TrueForAll(answerStage, static s => s == 0);
        if (allFirst && (requested is null || requested.Count == 0))
        {
            first.Model = Name;
            first.Version = VirtualModel.Version;
            first.AnsweredBy = _stages[0].Model;
            first.Stage = 1;
            first.RowStages = Enumerable.Repeat(1, rows).ToArray();
            first.Note = note; // why rows that asked for the next stage were answered by this one
            for (int i = 1; i < responses.Count; i++)
            {
                responses[i].Dispose();
            }

            return first;
        }

        var merged = new InferenceResponse(Name, VirtualModel.Version, request.Id);
        var names = requested is { Count: > 0 } ? requested : first.Outputs.Select(static t => t.Name).ToArray();
        merged.PrepareOutputs(names.Count);
        for (int o = 0; o < names.Count; o++)
        {
            var template = byRows ? first[names[o]] : responses[answerStage[0]][names[o]];
            var shape = template.Shape.ToArray();
            if (byRows)
            {
                shape[0] = rows;
            }

            int rowElements = (int)(Tensor.ElementCountOf(shape) / Math.Max(1, rows));
            for (int s = 1; byRows && s < responses.Count; s++)
            {
                var other = responses[s][names[o]];
                if (other.ElementType != template.ElementType || !other.Shape[1..].SequenceEqual(template.Shape[1..]))
                {
                    throw new InvalidOperationException($"Cascade '{Name}': output '{names[o]}' of stage {s + 1} has shape {Tensor.FormatShape(other.Shape)}, which does not match stage 1's {Tensor.FormatShape(template.Shape)}.");
                }
            }

            if (template.ElementType == TensorElementType.String)
            {
                var buffer = ArrayPool<string>.Shared.Rent(Math.Max(1, rows * rowElements));
                for (int r = 0; r < rows; r++)
                {
                    responses[answerStage[r]][names[o]].GetStrings().Slice(answerRow[r] * rowElements, rowElements).CopyTo(buffer.AsSpan(r * rowElements));
                }

                merged.AddPooledOutput(Tensor.WrapStrings(names[o], shape, buffer, rows * rowElements));
            }
            else
            {
                int rowBytes = rowElements * template.ElementType.SizeOf();
                var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, rows * rowBytes));
                for (int r = 0; r < rows; r++)
                {
                    responses[answerStage[r]][names[o]].Bytes.Slice(answerRow[r] * rowBytes, rowBytes).CopyTo(buffer.AsSpan(r * rowBytes));
                }

                merged.AddPooledOutput(Tensor.Wrap(names[o], template.ElementType, shape, buffer, rows * rowBytes));
            }
        }

        int highest = answerStage.Max();
        merged.Stage = highest + 1;
        merged.RowStages = answerStage.Select(static s => s + 1).ToArray();
        merged.AnsweredBy = _stages[highest].Model;
        merged.Instance = responses[highest].Instance;
        merged.BatchSize = responses[0].BatchSize;
        merged.QueueTime = responses.Aggregate(TimeSpan.Zero, static (t, r) => t + r.QueueTime);
        merged.ComputeTime = responses.Aggregate(TimeSpan.Zero, static (t, r) => t + r.ComputeTime);
        merged.Note = note;
        foreach (var r in responses)
        {
            r.Dispose();
        }

        return merged;
    }

    private DateTimeOffset? Deadline(InferenceRequest request) => RequestChecks.Deadline(request, null, time.GetUtcNow());

    private void Record(Counter<long> counter, long value, int stage)
    {
        if (value > 0 && counter.Enabled)
        {
            counter.SafeAdd(value, new TagList { { InferKitTelemetry.ModelTag, Name }, { SelectionMetrics.StageTag, stage + 1 } });
        }
    }

    /// <summary>
    /// Counts an answered request's rows under the stage whose answer the caller got, and the <paramref name="missedRows"/>
    /// rows that stage <paramref name="missedStage"/> (0-based; -1 for none) could not answer.
    /// </summary>
    private void RecordAnswered(int[] answerStage, int missedStage, string? missedOutcome, int missedRows)
    {
        if (metrics.CascadeRows.Enabled)
        {
            for (int s = 0; s < _stages.Length; s++)
            {
                int count = 0;
                foreach (int a in answerStage)
                {
                    count += a == s ? 1 : 0;
                }

                Record(metrics.CascadeRows, count, s);
            }
        }

        if (missedStage > 0 && missedRows > 0 && metrics.Fallbacks.Enabled)
        {
            metrics.Fallbacks.SafeAdd(missedRows, new TagList
            {
                { InferKitTelemetry.ModelTag, Name },
                { SelectionMetrics.StageTag, missedStage + 1 },
                { InferKitTelemetry.OutcomeTag, missedOutcome },
            });
        }
    }
}

/// <summary>
/// Adaptive selection: for each request, the most accurate variant whose predicted latency fits the request's
/// remaining time; the fastest when none fits (step down rather than refuse); the next faster one when a variant refuses
/// or fails (its backend throws), and then <see cref="InferenceResponse.Note"/> says which variants could not answer and
/// why. The fastest variant's refusal, deadline miss or failure is the request's own. Cancellation and the request's
/// deadline carry over to each variant tried: a cancelled request ends cancelled, an expired one DeadlineExceeded.
/// </summary>
/// <remarks>
/// A request never waits for a variant's load while another variant is loaded: a variant that is not loaded yet, loading
/// or failed to load refuses at once (<see cref="RefusalReason.ModelNotReady"/>, in the note) and its load starts, goes
/// on or is retried in the background. When none of the chosen and faster variants is loaded, the fastest loaded one of
/// the more accurate variants is tried last. When no variant is loaded at all, a request with a deadline (its timeout,
/// deadline or <see cref="AdaptiveModelOptions.DefaultBudget"/>) starts every variant's load and waits for the first to
/// finish only until its deadline, less the delivery margin; if none has by then, it is refused
/// (<see cref="RefusalReason.ModelNotReady"/>, naming each variant's state, with a retry-after hint) while the loads go
/// on. Only a request with no deadline at all waits for a load without limit, as a direct call would.
/// </remarks>
internal sealed class AdaptiveModel(string name, AdaptiveModelOptions options, ModelRegistry registry, TimeProvider time, SelectionMetrics metrics) : IVirtualModel
{
    private readonly string[] _variants = options.Variants.ToArray();

    /// <summary>The largest delivery margin among the variants: a wait for a variant's load ends that long before the deadline.</summary>
    private readonly TimeSpan _margin = registry.LargestDeliveryMargin(options.Variants);

    public string Name { get; } = name;

    public string Kind => "adaptive";

    public IReadOnlyList<string> Members => _variants;

    public string DescribeMember(int index) => $"variant '{_variants[index]}'";

    public async ValueTask<InferenceResponse> InferAsync(InferenceRequest request, CancellationToken cancellationToken)
    {
        RequestChecks.Check(Name, request);
        var now = time.GetUtcNow();
        var deadline = RequestChecks.Deadline(request, options.DefaultBudget, now);

        // No variant loaded (a cold start without LoadModelsOnStart, or every load failed): a request with a deadline
        // waits for a load only while a variant could still answer in time. Once the registry drains, no load starts:
        // the variants refuse as shutting down.
        if (deadline is DateTimeOffset due && !AnyLoaded() && !registry.IsDraining)
        {
            var refusal = await WaitForAVariantAsync(request, due, cancellationToken).ConfigureAwait(false);
            if (refusal is not null)
            {
                refusal.RenameTo(Name, VirtualModel.Version);
                return refusal;
            }

            now = time.GetUtcNow();
        }

        // No deadline at all (an infinite timeout): every variant has time, the most accurate is chosen.
        double remaining = deadline is DateTimeOffset d ? Math.Max(0, (d - now).TotalSeconds) : double.PositiveInfinity;
        int chosen = Choose(request, remaining);
        var routed = RowOps.WithInputs(request, request.InputArray, deadline, asCaller: true);

        // A variant that refuses or fails hands the request to the next one to try; what each said goes into the note.
        string? note = null;
        bool triedLoaded = false;
        for (int v = chosen; ;)
        {
            bool loaded = registry.IsLoaded(_variants[v]);
            triedLoaded |= loaded;
            int next = Next(v, chosen, triedLoaded);
            InferenceResponse response;
            try
            {
                // A variant that is not loaded refuses at once, its load starting or going on in the background, unless
                // the request has no deadline and no variant is loaded: then it waits for the load, as a direct call would.
                response = loaded || (deadline is null && !AnyLoaded())
                    ? await registry.InferRealAsync(_variants[v], null, routed, cancellationToken).ConfigureAwait(false)
                    : await registry.InferMemberAsync(_variants[v], routed, cancellationToken).ConfigureAwait(false);
            }
            catch (InferenceFailedException ex) when (next >= 0)
            {
                note = $"{note}Variant '{_variants[v]}' failed: {ex.Message} ";
                v = next;
                continue;
            }

            if (response.IsSuccess || response.Status == InferenceStatus.DeadlineExceeded || next < 0)
            {
                if (response.Status != InferenceStatus.Refused)
                {
                    Count(v);
                }

                response.RenameTo(Name, VirtualModel.Version);
                response.Note = note is null ? null : response.IsSuccess ? $"{note}Variant '{_variants[v]}' answered." : note.TrimEnd();
                return response;
            }

            note = $"{note}Variant '{_variants[v]}' could not answer ({response.Status} {response.RefusalReason}): {response.Message} ";
            response.Dispose();
            v = next;
        }
    }

    /// <summary>
    /// The variant to try after <paramref name="v"/>: the next faster one; after the fastest, when no loaded variant has been
    /// tried (none of <paramref name="chosen"/> and the faster ones is loaded), the fastest loaded one of those more
    /// accurate than <paramref name="chosen"/>; -1 when there is none.
    /// </summary>
    private int Next(int v, int chosen, bool triedLoaded)
    {
        if (v >= chosen && v < _variants.Length - 1)
        {
            return v + 1;
        }

        if (triedLoaded)
        {
            return -1;
        }

        for (int u = Math.Min(v, chosen) - 1; u >= 0; u--)
        {
            if (registry.IsLoaded(_variants[u]))
            {
                return u;
            }
        }

        return -1;
    }

    private bool AnyLoaded()
    {
        foreach (var variant in _variants)
        {
            if (registry.IsLoaded(variant))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// With no variant loaded: starts every variant's load (a failed one is retried) and waits until one is loaded, every
    /// load has failed, or only the delivery margin is left before <paramref name="due"/>. Null when a variant is loaded;
    /// otherwise the refusal, naming each variant's state, while the loads go on in the background.
    /// </summary>
    private async Task<InferenceResponse?> WaitForAVariantAsync(InferenceRequest request, DateTimeOffset due, CancellationToken cancellationToken)
    {
        var loads = new Task[_variants.Length];
        for (int v = 0; v < loads.Length; v++)
        {
            loads[v] = registry.LoadInBackground(_variants[v]);
        }

        while (!AnyLoaded())
        {
            var pending = Array.FindAll(loads, static t => !t.IsCompleted);
            if (pending.Length == 0
                || !await ModelRegistry.FinishesWithinAsync(Task.WhenAny(pending), due - time.GetUtcNow() - _margin, time, cancellationToken).ConfigureAwait(false))
            {
                break;
            }
        }

        if (AnyLoaded())
        {
            return null;
        }

        // The retry-after hint: how long the longest-running load has taken so far (a load is expected to need about as
        // long again); none when no load is running (every one failed: the message says why).
        TimeSpan? retryAfter = null;
        var states = new string[_variants.Length];
        for (int v = 0; v < _variants.Length; v++)
        {
            var info = registry.GetModel(_variants[v]);
            var loadingFor = registry.LoadingFor(_variants[v]);
            states[v] = info.State switch
            {
                ModelState.Loading => string.Create(CultureInfo.InvariantCulture, $"variant '{_variants[v]}' is loading ({(loadingFor ?? TimeSpan.Zero).TotalMilliseconds:F0} ms so far)"),
                ModelState.Failed => $"variant '{_variants[v]}' failed to load ({info.Error ?? "unknown error"})",
                _ => $"variant '{_variants[v]}' is {info.State}",
            };
            if (loadingFor is TimeSpan t && (retryAfter is null || t > retryAfter))
            {
                retryAfter = ModelRegistry.RetryAfterLoading(t);
            }
        }

        var now = time.GetUtcNow();
        int chosen = Choose(request, Math.Max(0, (due - now).TotalSeconds));
        return registry.RefuseNotReady(_variants[chosen], request, retryAfter, string.Create(CultureInfo.InvariantCulture,
            $"Model '{Name}': no variant is loaded, and none finished loading in time for the request's deadline ({(due - now).TotalMilliseconds:F1} ms away, {_margin.TotalMilliseconds:F1} ms of it kept as the delivery margin): {string.Join("; ", states)}. The loads go on in the background."));
    }

    /// <summary>The index of the variant to try first.</summary>
    internal int Choose(InferenceRequest request, double remainingSeconds)
    {
        int fastest = _variants.Length - 1;
        if (options.CriticalUsesFastest && request.Priority == InferencePriority.Critical)
        {
            return fastest;
        }

        int rows = RowOps.RowsOf(request);
        double allowed = remainingSeconds * options.Headroom;
        int best = fastest;
        double bestPredicted = double.MaxValue;
        for (int v = 0; v < _variants.Length; v++)
        {
            double predicted = registry.PredictLatency(_variants[v], request.Priority, rows) ?? 0;
            if (predicted <= allowed)
            {
                return v;
            }

            if (predicted < bestPredicted)
            {
                bestPredicted = predicted;
                best = v;
            }
        }

        return best;
    }

    private void Count(int variant)
    {
        var tags = new TagList { { InferKitTelemetry.ModelTag, Name }, { "inferkit.adaptive.variant", _variants[variant] } };
        if (metrics.VariantChosen.Enabled)
        {
            metrics.VariantChosen.SafeAdd(1, tags);
        }

        if (variant > 0 && metrics.StepDowns.Enabled)
        {
            metrics.StepDowns.SafeAdd(1, tags);
        }
    }
}
