using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Selection;
using InferKit.Telemetry;
using InferKit.Tensors;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Selection;

public sealed class CascadeTests
{
    /// <summary>
    /// A two-class classifier over rows (id, r). The small model is sure (0.95) of rows with even r and unsure (0.55)
    /// of odd ones; the large model answers (0.1, 0.9) for every row, so the answer shows which stage gave it.
    /// A run (warm-up runs aside) can wait at a gate, advance a fake clock and fail.
    /// </summary>
    private sealed class Classifier(bool large, FakeTimeProvider? time = null) : IModelBackend
    {
        public ConcurrentQueue<int> BatchRows { get; } = new();

        /// <summary>Fake time each run (warm-up aside) takes.</summary>
        public TimeSpan Compute { get; set; }

        /// <summary>When set, runs (warm-up aside) throw this exception after their compute time.</summary>
        public Func<Exception?>? Failure { get; set; }

        /// <summary>When set, runs (warm-up aside) wait at this gate first (a bounded wait: see <see cref="Fakes.Gate"/>).</summary>
        public Gate? Gate { get; set; }

        /// <summary>Completes when a run (warm-up aside) has started.</summary>
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ModelSignature Signature { get; } = new(
            [new TensorSpec("x", TensorElementType.Float32, [-1, 2])],
            [new TensorSpec("probabilities", TensorElementType.Float32, [-1, 2]), new TensorSpec("echo", TensorElementType.Float32, [-1, 2])]);

        public ExecutionProviderInfo Provider { get; } = new("Fake", "Fake");

        public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
        {
            var x = inputs[0].GetSpan<float>();
            int rows = (int)inputs[0].Shape[0];
            if (x.Length > 0 && x[0] != 0)
            {
                BatchRows.Enqueue(rows);
                Entered.TrySetResult();
                Gate?.Wait(cancellationToken);
                time?.Advance(Compute);
                if (Failure?.Invoke() is { } error)
                {
                    throw error;
                }
            }

            var p = new float[rows * 2];
            for (int r = 0; r < rows; r++)
            {
                bool sure = ((int)x[(r * 2) + 1]) % 2 == 0;
                (p[r * 2], p[(r * 2) + 1]) = large ? (0.1f, 0.9f) : sure ? (0.95f, 0.05f) : (0.55f, 0.45f);
            }

            sink.OnOutput(0, TensorElementType.Float32, [rows, 2], MemoryMarshal.AsBytes(p.AsSpan()));
            sink.OnOutput(1, TensorElementType.Float32, [rows, 2], MemoryMarshal.AsBytes(x));
        }

        public void Dispose()
        {
        }
    }

    private static InferenceRequest Rows(int id, int count, TimeSpan? timeout = null)
    {
        var data = new float[count * 2];
        for (int r = 0; r < count; r++)
        {
            data[r * 2] = id;
            data[(r * 2) + 1] = r;
        }

        return new InferenceRequest(Tensor.Create("x", data, count, 2)) { Id = $"req{id}", Timeout = timeout };
    }

    /// <summary>The cascade small → large, loaded, where the large model failed to load (so stage 2 refuses).</summary>
    private static async Task<ServiceProvider> WithoutLargeAsync()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new Classifier(large: false))
            .AddModel("large", _ => throw new InvalidOperationException("weights missing"), o => o.Required = false)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"));
        var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        return provider;
    }

    /// <summary>
    /// The cascade small → large on a fake clock, both models loaded (a stage that is not loaded yet is not waited for:
    /// it refuses, and stage 1's answer stands, while it loads).
    /// </summary>
    private static async Task<(ServiceProvider Provider, Classifier Small, Classifier Large, FakeTimeProvider Time)> BuildAsync(AcceptanceRule rule, TimeSpan smallDelay,
        Action<ModelOptions>? configureLarge = null, Action<ModelOptions>? configureSmall = null)
    {
        var time = new FakeTimeProvider();
        var small = new Classifier(large: false, time);
        var large = new Classifier(large: true, time);
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("small", _ => small, o =>
            {
                o.Batching.MaxBatchSize = 64;
                o.Batching.MaxQueueDelay = smallDelay;
                configureSmall?.Invoke(o);
            })
            .AddModel("large", _ => large, o => configureLarge?.Invoke(o))
            .AddCascade("cascade", c => c.Then("small", rule).Then("large"));
        var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        return (provider, small, large, time);
    }

    [Fact]
    public async Task Rows_are_split_between_stages_inside_a_mixed_batch_and_each_request_gets_its_rows_in_order()
    {
        var (provider, small, large, time) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.FromSeconds(1));
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();

        // Four requests of three rows queue on the small model and run there as one batch of 12 rows.
        var tasks = Enumerable.Range(1, 4).Select(id => client.InferAsync("cascade", Rows(id, 3)).AsTask()).ToArray();
        Assert.Empty(small.BatchRows);
        time.Advance(TimeSpan.FromSeconds(1));
        var responses = await Task.WhenAll(tasks);

        Assert.Equal([12], small.BatchRows.ToArray());
        Assert.Equal(4, large.BatchRows.Sum()); // only the four unsure rows (r = 1) went on
        for (int i = 0; i < responses.Length; i++)
        {
            using var r = responses[i];
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("cascade", r.Model);
            Assert.Equal($"req{i + 1}", r.RequestId);
            Assert.Equal(2, r.Stage);
            Assert.Equal([1, 2, 1], r.RowStages);
            var p = r["probabilities"].GetSpan<float>();
            Assert.Equal([0.95f, 0.05f, 0.1f, 0.9f, 0.95f, 0.05f], p.ToArray());
            var echo = r["echo"].GetSpan<float>();
            Assert.Equal([i + 1f, 0, i + 1f, 1, i + 1f, 2], echo.ToArray());
        }
    }

    [Fact]
    public async Task A_request_whose_rows_are_all_accepted_never_reaches_the_next_stage()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.Margin(0.5), TimeSpan.Zero);
        await using var __ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        var data = new float[] { 5, 0, 5, 2 }; // both rows sure
        using var r = await client.InferAsync("cascade", new InferenceRequest(Tensor.Create("x", data, 2, 2)));
        Assert.True(r.IsSuccess);
        Assert.Equal(1, r.Stage);
        Assert.Equal("small", r.AnsweredBy);
        Assert.Empty(large.BatchRows);
    }

    [Fact]
    public async Task When_the_next_stage_refuses_the_first_stages_answer_says_so()
    {
        await using var provider = await WithoutLargeAsync();
        var client = provider.GetRequiredService<IInferenceClient>();

        // Row 1 is unsure and escalates; the large model refuses (it failed to load), so the small model's answer stands.
        using var r = await client.InferAsync("cascade", Rows(1, 2));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal([1, 1], r.RowStages);
        Assert.Equal([0.95f, 0.05f, 0.55f, 0.45f], r["probabilities"].GetSpan<float>().ToArray());
        Assert.NotNull(r.Note);
        Assert.Contains("Stage 2 ('large') could not answer", r.Note, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_later_stage_not_loaded_yet_is_not_waited_for_its_load_starts_in_the_background_and_stage_1_answers()
    {
        var gate = new Gate("the load of 'large'");
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(new FakeTimeProvider());
        services.AddInferKit()
            .AddModel("small", _ => new Classifier(large: false))
            .AddModel("large", _ =>
            {
                gate.Wait();
                return new Classifier(large: true);
            })
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"));
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var client = provider.GetRequiredService<IInferenceClient>();
        await registry.LoadAsync("small");
        try
        {
            Assert.Equal(ModelState.NotLoaded, registry.GetModel("large").State);

            // Row 1 is unsure; "large" is not loaded (and its load is held at the gate): stage 1's answer stands within
            // the 100 ms deadline. The WaitAsync is only a safety net: before, the request waited for the whole load.
            using var r = await client.InferAsync("cascade", Rows(1, 2, TimeSpan.FromMilliseconds(100))).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal([1, 1], r.RowStages);
            Assert.Equal(
                "Stage 2 ('large') could not answer (Refused ModelNotReady): Model 'large' is not available: it is not loaded yet; its load has started in the background. Stage 1 answered those rows.",
                r.Note);

            // The request started the load, which goes on without it.
            Assert.Equal(ModelState.Loading, registry.GetModel("large").State);
        }
        finally
        {
            gate.Open();
        }

        await registry.LoadAsync("large"); // the load the request started
        using var later = await client.InferAsync("cascade", Rows(2, 2, TimeSpan.FromMilliseconds(100)));
        Assert.True(later.IsSuccess, later.Message);
        Assert.Equal([1, 2], later.RowStages);
    }

    [Fact]
    public async Task Stage_1_not_loaded_yet_is_waited_for_only_until_the_deadline_less_its_delivery_margin_and_without_a_deadline_for_the_whole_load()
    {
        var gate = new Gate("the load of 'small'");
        var time = new FakeTimeProvider();
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("small", _ =>
            {
                gate.Wait();
                return new Classifier(large: false);
            })
            .AddModel("large", _ => new Classifier(large: true))
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"));
        await using var provider = services.BuildServiceProvider();
        var registry = provider.GetRequiredService<IModelRegistry>();
        var client = provider.GetRequiredService<IInferenceClient>();
        await registry.LoadAsync("large");
        try
        {
            var bounded = client.InferAsync("cascade", Rows(1, 2, TimeSpan.FromMilliseconds(100))).AsTask();
            var unbounded = client.InferAsync("cascade", Rows(2, 2, Timeout.InfiniteTimeSpan)).AsTask();
            Assert.Equal(ModelState.Loading, registry.GetModel("small").State);

            // 98 ms later only stage 1's 2 ms delivery margin is left: refused, the load going on. The WaitAsync is only
            // a safety net: before, the request waited for the whole load, held at the gate.
            time.Advance(TimeSpan.FromMilliseconds(97));
            Assert.False(bounded.IsCompleted);
            time.Advance(TimeSpan.FromMilliseconds(1));
            using var r = await bounded.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(InferenceStatus.Refused, r.Status);
            Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
            Assert.Equal("cascade", r.Model);
            Assert.Equal(TimeSpan.FromMilliseconds(98), r.RetryAfter);
            Assert.StartsWith("Model 'small' is not available: it is still loading (98 ms so far)", r.Message, StringComparison.Ordinal);
            Assert.Equal(ModelState.Loading, registry.GetModel("small").State);

            // A request with no deadline at all waits for the load and is answered once it finishes.
            Assert.False(unbounded.IsCompleted);
            gate.Open();
            using var answered = await unbounded.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(answered.IsSuccess, answered.Message);
            Assert.Equal([1, 2], answered.RowStages);
        }
        finally
        {
            gate.Open();
        }
    }

    [Fact]
    public async Task When_the_next_stage_fails_the_first_stages_answer_stands_and_says_so()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");

        // Row 1 is unsure and escalates; the large model's run throws, so the small model's answer stands for it.
        using var r = await client.InferAsync("cascade", Rows(1, 2));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal("cascade", r.Model);
        Assert.Equal("small", r.AnsweredBy);
        Assert.Equal(1, r.Stage);
        Assert.Equal([1, 1], r.RowStages);
        Assert.Equal([0.95f, 0.05f, 0.55f, 0.45f], r["probabilities"].GetSpan<float>().ToArray());
        Assert.NotNull(r.Note);
        Assert.Contains("Stage 2 ('large') failed", r.Note, StringComparison.Ordinal);
        Assert.Contains("CUDA error: device lost", r.Note, StringComparison.Ordinal);
        Assert.Contains("stage 1 answered", r.Note, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task A_first_stage_failure_stays_an_error()
    {
        var (provider, small, _, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        small.Failure = () => new InvalidOperationException("CUDA error: device lost");

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(async () => await client.InferAsync("cascade", Rows(1, 2)));
        Assert.Equal("small", ex.Model);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task When_the_deadline_passes_while_the_next_stage_runs_the_request_expires_rather_than_answer_late(bool stageFails)
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();

        // The large model takes 200 ms of a 100 ms budget, then answers (too late) or fails.
        large.Compute = TimeSpan.FromMilliseconds(200);
        if (stageFails)
        {
            large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        }

        using var r = await client.InferAsync("cascade", Rows(1, 2, TimeSpan.FromMilliseconds(100)));
        Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
        Assert.Equal("cascade", r.Model);
        Assert.Contains("Stage 2 ('large')", r.Message, StringComparison.Ordinal);
        Assert.Contains("deadline", r.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(99, 2, true, true)] // 1 ms left: inside the default 2 ms margin
    [InlineData(99, 2, false, true)] // stage 2's own answer, 1 ms before the deadline, was discarded by stage 2
    [InlineData(97, 2, true, false)] // 3 ms left: outside the margin, stage 1's answer is delivered
    [InlineData(95, 10, true, true)] // 5 ms left: inside stage 1's configured 10 ms margin
    public async Task A_fallback_to_the_earlier_stage_keeps_the_delivery_margin_before_the_deadline(int stage2Ms, int stage1MarginMs, bool stageFails, bool expires)
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero,
            configureSmall: o => o.Batching.DeliveryMargin = TimeSpan.FromMilliseconds(stage1MarginMs));
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();

        // The large model takes stage2Ms of a 100 ms budget (on the fake clock), then fails or answers.
        large.Compute = TimeSpan.FromMilliseconds(stage2Ms);
        if (stageFails)
        {
            large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        }

        using var r = await client.InferAsync("cascade", Rows(1, 2, TimeSpan.FromMilliseconds(100)));
        if (expires)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.Equal("cascade", r.Model);
            Assert.StartsWith($"Cascade 'cascade': the rows it sent on were not answered until {100 - stage2Ms:F1} ms before the request's deadline, within the {stage1MarginMs:F1} ms delivery margin;",
                r.Message, StringComparison.Ordinal);
            Assert.Contains("Stage 2 ('large')", r.Message, StringComparison.Ordinal);
        }
        else
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal([1, 1], r.RowStages);
            Assert.Contains("Stage 2 ('large') failed", r.Note, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task When_the_next_stage_expires_by_its_own_default_timeout_a_request_without_a_deadline_keeps_the_first_stages_answer()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero, o => o.Batching.DefaultTimeout = TimeSpan.FromMilliseconds(100));
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        large.Compute = TimeSpan.FromMilliseconds(200);

        // The caller set no deadline: only the large model's own default timeout passed, so stage 1's answer is still wanted.
        using var r = await client.InferAsync("cascade", Rows(1, 2));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal([1, 1], r.RowStages);
        Assert.Contains("Stage 2 ('large') could not answer (DeadlineExceeded", r.Note, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_with_no_timeout_at_all_is_not_cut_short_by_a_stages_default_timeout()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero, o => o.Batching.DefaultTimeout = TimeSpan.FromMilliseconds(100));
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        large.Compute = TimeSpan.FromMilliseconds(200);

        // Timeout.InfiniteTimeSpan asks for no timeout, not even a model's default: the large model answers its row.
        using var r = await client.InferAsync("cascade", Rows(1, 2, Timeout.InfiniteTimeSpan));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal([1, 2], r.RowStages);
        Assert.Null(r.Note);
    }

    [Fact]
    public async Task A_request_cancelled_while_the_next_stage_runs_is_cancelled_even_when_that_stage_then_fails()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        var gate = new Gate("the run of 'large'");
        using var open = gate.OpenOnDispose(); // disposed before the provider, which waits for the held run
        large.Gate = gate;
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        using var cts = new CancellationTokenSource();

        // The large model's run starts, the caller cancels, then the run fails: the caller asked for nothing more, so
        // the request ends cancelled rather than answered by stage 1 (or failed).
        var call = Task.Run(async () => await client.InferAsync("cascade", Rows(1, 2), cts.Token));
        await large.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await cts.CancelAsync();
        gate.Open();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
    }

    [Fact]
    public async Task Cascade_rows_count_each_answered_row_once_under_the_stage_that_answered_it_and_fallbacks_by_outcome()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var factory = provider.GetRequiredService<IMeterFactory>();
        using var answered = new MetricCollector<long>(factory, InferKitTelemetry.Name, "inferkit.cascade.rows");
        using var escalations = new MetricCollector<long>(factory, InferKitTelemetry.Name, "inferkit.cascade.escalations");
        using var fallbacks = new MetricCollector<long>(factory, InferKitTelemetry.Name, "inferkit.cascade.fallbacks");
        var client = provider.GetRequiredService<IInferenceClient>();

        // Four rows: two sure, two sent on; the large model answers them.
        (await client.InferAsync("cascade", Rows(1, 4))).Dispose();

        // Two rows: one sure, one sent on; the large model fails, so stage 1 answers both.
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        (await client.InferAsync("cascade", Rows(2, 2))).Dispose();

        // Four rows: two sent on; the large model runs past the deadline: nothing is answered, not even the sure rows.
        large.Failure = null;
        large.Compute = TimeSpan.FromMilliseconds(200);
        using (var expired = await client.InferAsync("cascade", Rows(3, 4, TimeSpan.FromMilliseconds(100))))
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, expired.Status);
        }

        static long Sum(MetricCollector<long> c, int stage, string? outcome = null) => c.GetMeasurementSnapshot()
            .Where(m => Equals(m.Tags["inferkit.cascade.stage"], stage) && (outcome is null || Equals(m.Tags[InferKitTelemetry.OutcomeTag], outcome)))
            .Sum(static m => m.Value);

        Assert.Equal(2 + 2, Sum(answered, 1));
        Assert.Equal(2, Sum(answered, 2));
        Assert.Equal(2 + 1 + 2, Sum(escalations, 1));
        Assert.Equal(1, Sum(fallbacks, 2, "error"));
        Assert.Equal(1, fallbacks.GetMeasurementSnapshot().Sum(static m => m.Value));
    }

    [Fact]
    public async Task Rows_kept_at_stage_1_because_stage_2_refused_are_counted_as_answered_by_stage_1()
    {
        await using var provider = await WithoutLargeAsync();
        var factory = provider.GetRequiredService<IMeterFactory>();
        using var answered = new MetricCollector<long>(factory, InferKitTelemetry.Name, "inferkit.cascade.rows");
        using var fallbacks = new MetricCollector<long>(factory, InferKitTelemetry.Name, "inferkit.cascade.fallbacks");
        var client = provider.GetRequiredService<IInferenceClient>();

        using var r = await client.InferAsync("cascade", Rows(1, 2));
        Assert.Equal([1, 1], r.RowStages);
        var rows = Assert.Single(answered.GetMeasurementSnapshot());
        Assert.Equal(2, rows.Value);
        Assert.Equal(1, rows.Tags["inferkit.cascade.stage"]);
        var fallback = Assert.Single(fallbacks.GetMeasurementSnapshot());
        Assert.Equal(1, fallback.Value);
        Assert.Equal(2, fallback.Tags["inferkit.cascade.stage"]);
        Assert.Equal("refused", fallback.Tags[InferKitTelemetry.OutcomeTag]);
    }

    [Fact]
    public async Task A_first_stage_refusal_is_the_cascades_answer_and_its_message_still_names_the_stage_that_refused()
    {
        // The small model holds requests up to 1 s for a batch; this one's 100 ms pass first, in the queue.
        var (provider, _, _, time) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.FromSeconds(1));
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        var call = client.InferAsync("cascade", Rows(1, 2, TimeSpan.FromMilliseconds(100))).AsTask();
        time.Advance(TimeSpan.FromMilliseconds(100));
        using var r = await call;
        Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
        Assert.Equal("cascade", r.Model);
        Assert.StartsWith("Model 'small': the deadline passed", r.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A virtual model has one version, "1" (the only one it describes and accepts): every answer it gives names that
    /// version, not the version of the member that served (which AnsweredBy names), so a caller that pins the version it
    /// was answered by can call it again.
    /// </summary>
    [Fact]
    public async Task Answers_of_a_cascade_and_an_adaptive_model_name_their_own_version_not_a_members()
    {
        var time = new FakeTimeProvider();
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("small", _ => new Classifier(large: false, time), o => o.Version = "7")
            .AddModel("large", _ => new Classifier(large: true, time), o => o.Version = "9")
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"))
            .AddAdaptiveModel("adaptive", a => { a.Variants.Add("large"); a.Variants.Add("small"); });
        await using var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        var client = provider.GetRequiredService<IInferenceClient>();
        Assert.Equal("1", provider.GetRequiredService<IModelRegistry>().GetModel("cascade").Version);

        using (var sure = await client.InferAsync("cascade", Rows(1, 1)))
        {
            Assert.Equal((1, "1"), (sure.Stage, sure.Version));
        }

        using (var mixed = await client.InferAsync("cascade", Rows(2, 2)))
        {
            Assert.Equal((2, "1"), (mixed.Stage, mixed.Version));
        }

        using (var adaptive = await client.InferAsync("adaptive", Rows(3, 1)))
        {
            Assert.True(adaptive.IsSuccess, adaptive.Message);
            Assert.Equal("1", adaptive.Version);
        }

        using var again = await client.InferAsync("cascade", "1", Rows(4, 1));
        Assert.True(again.IsSuccess, again.Message);
    }

    [Fact]
    public async Task A_custom_rule_decides_per_row()
    {
        // Accept only rows whose second probability is tiny: the same as "sure" here, decided by user code.
        var rule = AcceptanceRule.Custom(scores => scores[1] < 0.1f, output: "probabilities");
        var (provider, _, large, _) = await BuildAsync(rule, TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        using var r = await client.InferAsync("cascade", Rows(9, 4));
        Assert.Equal([1, 2, 1, 2], r.RowStages);
        Assert.Equal(2, large.BatchRows.Sum());
    }

    [Fact]
    public async Task Requested_outputs_are_honoured_after_merging()
    {
        var (provider, _, _, _) = await BuildAsync(AcceptanceRule.Entropy(0.3), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        var request = new InferenceRequest(Rows(3, 2).Inputs.ToArray()) { RequestedOutputs = ["echo"] };
        using var r = await client.InferAsync("cascade", request);
        Assert.Equal("echo", Assert.Single(r.Outputs).Name);
        Assert.Equal([1, 2], r.RowStages);
    }

    [Fact]
    public async Task An_unknown_requested_output_is_invalid_input_naming_the_cascade_and_its_outputs()
    {
        var (provider, _, large, _) = await BuildAsync(AcceptanceRule.Entropy(0.3), TimeSpan.Zero);
        await using var _ = provider;
        var client = provider.GetRequiredService<IInferenceClient>();
        var request = new InferenceRequest(Rows(3, 2).Inputs.ToArray()) { RequestedOutputs = ["labels"] };
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await client.InferAsync("cascade", request));
        Assert.Equal("cascade", ex.Model);
        Assert.Equal("Model 'cascade': unknown requested output 'labels'. Its stages return probabilities, echo.", ex.Message);
        Assert.Empty(large.BatchRows); // found out before any row went on
    }

    [Fact]
    public void Cascades_are_validated_at_start_with_every_error_listed()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new Classifier(false))
            .AddCascade("one", c => c.Then("small"))
            .AddCascade("bad", c => c.Then("small").Then("missing", AcceptanceRule.TopProbability(0.5)).Then("small"));
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var all = string.Join("\n", ex.Failures);
        Assert.Contains("cascade 'one': needs at least two stages", all, StringComparison.Ordinal);
        Assert.Contains("cascade 'bad': stage 1 ('small') has no acceptance rule", all, StringComparison.Ordinal);
        Assert.Contains("member 'missing' is not a registered model", all, StringComparison.Ordinal);
    }

    /// <summary>
    /// A member without a name (a stage or variant read from configuration that was left out) is a validation error naming
    /// the virtual model and the member's position, collected with the others, not an exception from a dictionary lookup.
    /// </summary>
    [Fact]
    public void Virtual_models_with_a_member_without_a_name_are_refused_at_start_naming_it()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => new Classifier(false))
            .AddCascade("c", c => c.Then(null!, AcceptanceRule.TopProbability(0.5)).Then("small"))
            .AddCascade("n", c => c.Then("small", AcceptanceRule.TopProbability(0.5)).Stages.Add(null!))
            .AddAdaptiveModel("a", a => { a.Variants.Add("small"); a.Variants.Add(" "); });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var all = string.Join("\n", ex.Failures);
        Assert.Contains("cascade 'c': stage 1 has no model name", all, StringComparison.Ordinal);
        Assert.Contains("cascade 'n': stage 2 is null", all, StringComparison.Ordinal);
        Assert.Contains("adaptive model 'a': variant 2 has no model name", all, StringComparison.Ordinal);
    }

    /// <summary>
    /// A text classifier whose one input is a single string (a scalar, as a model with its tokenizer in the graph takes):
    /// the small model is sure (0.95) of texts that start with "sure" and unsure (0.55) of the rest; the large model answers
    /// (0.1, 0.9). Each also returns a scalar "label": 0 from the small model, 1 from the large one.
    /// </summary>
    private static ScriptedBackend TextClassifier(bool large) => new(
        new ModelSignature(
            [new TensorSpec("text", TensorElementType.String, [])],
            [new TensorSpec("probabilities", TensorElementType.Float32, [2]), new TensorSpec("label", TensorElementType.Int64, [])]),
        (inputs, sink) =>
        {
            bool sure = inputs[0].GetStrings()[0].StartsWith("sure", StringComparison.Ordinal);
            float[] p = large ? [0.1f, 0.9f] : sure ? [0.95f, 0.05f] : [0.55f, 0.45f];
            long[] label = [large ? 1 : 0];
            sink.OnOutput(0, TensorElementType.Float32, [2], MemoryMarshal.AsBytes(p.AsSpan()));
            sink.OnOutput(1, TensorElementType.Int64, [], MemoryMarshal.AsBytes(label.AsSpan()));
        });

    private static InferenceRequest Text(string text, params string[] outputs)
        => new(Tensor.Create("text", new[] { text }, ReadOnlySpan<long>.Empty)) { RequestedOutputs = outputs.Length == 0 ? null : outputs };

    [Fact]
    public async Task A_cascade_over_models_with_a_scalar_input_judges_each_request_whole_and_sends_it_on_as_it_came()
    {
        var small = TextClassifier(large: false);
        var large = TextClassifier(large: true);
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => small)
            .AddModel("large", _ => large)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large"));
        await using var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        large.Runs.Clear(); // warm-up
        var client = provider.GetRequiredService<IInferenceClient>();

        // Sure: stage 1's answer, with its shapes.
        using (var r = await client.InferAsync("cascade", Text("sure, it is")))
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(1, r.Stage);
            Assert.Equal([1], r.RowStages);
            Assert.Equal([2L], r["probabilities"].Shape.ToArray());
            Assert.Equal([0.95f, 0.05f], r["probabilities"].GetSpan<float>().ToArray());
        }

        Assert.Empty(large.Runs);

        // Unsure: the request goes on whole, its scalar input as it came, and stage 2's outputs are the answer.
        using (var r = await client.InferAsync("cascade", Text("maybe")))
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("cascade", r.Model);
            Assert.Equal("large", r.AnsweredBy);
            Assert.Equal(2, r.Stage);
            Assert.Equal([2], r.RowStages);
            Assert.Equal([2L], r["probabilities"].Shape.ToArray());
            Assert.Equal([0.1f, 0.9f], r["probabilities"].GetSpan<float>().ToArray());
            Assert.Equal(0, r["label"].Rank);
            Assert.Equal([1L], r["label"].GetSpan<long>().ToArray());
        }

        Assert.Equal(["text: String[]"], large.Runs.ToArray());

        // A requested scalar output, from either stage.
        foreach (var (text, stage, label) in new[] { ("sure", 1, 0L), ("maybe", 2, 1L) })
        {
            using var r = await client.InferAsync("cascade", Text(text, "label"));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(stage, r.Stage);
            var output = Assert.Single(r.Outputs);
            Assert.Equal("label", output.Name);
            Assert.Equal(0, output.Rank);
            Assert.Equal([label], output.GetSpan<long>().ToArray());
        }
    }

    [Fact]
    public async Task A_cascade_over_models_whose_axis_0_is_not_a_batch_axis_judges_each_request_whole()
    {
        // AxisZeroIsBatch = false: axis 0 of "x" is, say, a sequence of frames, not rows. The rule accepts an item only
        // when every frame is sure; frame 1 of the request is not, so the whole item, both frames, goes on.
        var small = new Classifier(large: false);
        var large = new Classifier(large: true);
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => small, o => o.AxisZeroIsBatch = false)
            .AddModel("large", _ => large, o => o.AxisZeroIsBatch = false)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.Custom(static scores =>
            {
                for (int i = 0; i < scores.Length; i += 2)
                {
                    if (Math.Max(scores[i], scores[i + 1]) < 0.9f)
                    {
                        return false;
                    }
                }

                return true;
            }, output: "probabilities")).Then("large"));
        await using var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        var client = provider.GetRequiredService<IInferenceClient>();

        using var r = await client.InferAsync("cascade", Rows(1, 2));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal(2, r.Stage);
        Assert.Equal([2], r.RowStages);
        Assert.Equal([2], large.BatchRows.ToArray());
        Assert.Equal([0.1f, 0.9f, 0.1f, 0.9f], r["probabilities"].GetSpan<float>().ToArray());
    }

    [Fact]
    public async Task A_custom_rule_that_throws_fails_the_request_naming_the_cascade_and_the_stage_and_the_cascade_goes_on()
    {
        var small = new Classifier(large: false);
        var large = new Classifier(large: true);
        bool fail = true;
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("small", _ => small)
            .AddModel("large", _ => large)
            .AddCascade("cascade", c => c.Then("small", AcceptanceRule.Custom(
                scores => fail ? throw new FormatException("the rule's own bug") : true, output: "probabilities")).Then("large"));
        await using var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        var client = provider.GetRequiredService<IInferenceClient>();

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => client.InferAsync("cascade", Rows(1, 1)).AsTask());
        Assert.Equal("Cascade 'cascade': the acceptance rule of stage 1 ('small') failed: FormatException: the rule's own bug", ex.Message);
        Assert.IsType<FormatException>(ex.InnerException);

        fail = false;
        using var r = await client.InferAsync("cascade", Rows(1, 1));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal(1, r.Stage);
    }

    [Fact]
    public async Task A_cascade_is_described_like_a_model()
    {
        var (provider, _, _, _) = await BuildAsync(AcceptanceRule.TopProbability(0.9), TimeSpan.Zero);
        await using var _ = provider;
        var registry = provider.GetRequiredService<IModelRegistry>();
        Assert.Contains("cascade", registry.ModelNames);
        var info = registry.GetModel("cascade");
        Assert.Equal("cascade", info.Kind);
        Assert.True(info.IsReady);
        Assert.Equal("x", info.Signature!.Inputs[0].Name);
    }
}
