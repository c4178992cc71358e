using InferKit.Models;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Selection;

public sealed class AdaptiveTests
{
    [Fact]
    public async Task The_most_accurate_variant_serves_while_it_meets_the_deadline_and_a_faster_one_takes_over_under_load()
    {
        var (provider, client, large, _) = await CreateAsync(TimeSpan.FromMilliseconds(30));
        await using var owned = provider;
        using var release = new GateOpener(large.Release); // disposed before the provider, which waits for a held run

        // Idle: large's predicted 30 ms fits 80% of 50 ms.
        using (var r = await client.InferAsync("auto", FakeBackend.Request(1)))
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("auto", r.Model);
            Assert.Equal("large", r.AnsweredBy);
        }

        // Load: large is busy and one request waits; a new one would need ~75 ms there, so small answers.
        large.Hold();
        var busy = Task.Run(async () => await client.InferAsync("large", FakeBackend.Request(2)));
        await large.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        var waiting = client.InferAsync("large", FakeBackend.Request(3)).AsTask();
        using (var r = await client.InferAsync("auto", FakeBackend.Request(4)))
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("small", r.AnsweredBy);
        }

        // A generous deadline still goes to the accurate variant, even under that load.
        var patient = client.InferAsync("auto", FakeBackend.Request(5, timeout: TimeSpan.FromSeconds(1))).AsTask();
        Assert.False(patient.IsCompleted);

        // Critical requests go straight to the fastest variant.
        using (var r = await client.InferAsync("auto", FakeBackend.Request(6, InferencePriority.Critical, TimeSpan.FromSeconds(10))))
        {
            Assert.Equal("small", r.AnsweredBy);
        }

        // Load falls: back up to the accurate variant.
        large.Release();
        (await busy).Dispose();
        (await waiting).Dispose();
        using (var r = await patient)
        {
            Assert.Equal("large", r.AnsweredBy);
        }

        using (var r = await client.InferAsync("auto", FakeBackend.Request(7)))
        {
            Assert.Equal("large", r.AnsweredBy);
        }
    }

    [Fact]
    public async Task Given_no_timeout_at_all_the_most_accurate_variant_serves_and_a_negative_timeout_is_refused()
    {
        var (provider, client, _, _) = await CreateAsync(TimeSpan.FromMilliseconds(300));
        await using var owned = provider;

        // Each variant runs once, so that its latency is known.
        foreach (var variant in new[] { "large", "small" })
        {
            using var warm = await client.InferAsync(variant, FakeBackend.Request(9));
            Assert.True(warm.IsSuccess, warm.Message);
        }

        // The default 50 ms budget cannot fit large's 300 ms: small answers.
        using (var r = await client.InferAsync("auto", FakeBackend.Request(1)))
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("small", r.AnsweredBy);
        }

        // No timeout at all (Timeout.InfiniteTimeSpan), and the largest one: large answers.
        foreach (var timeout in new[] { Timeout.InfiniteTimeSpan, TimeSpan.MaxValue })
        {
            using var r = await client.InferAsync("auto", FakeBackend.Request(2, timeout: timeout));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("large", r.AnsweredBy);
        }

        await Assert.ThrowsAsync<InvalidInferenceRequestException>(
            async () => await client.InferAsync("auto", FakeBackend.Request(3, timeout: TimeSpan.FromMilliseconds(-5))));
    }

    [Fact]
    public async Task When_the_chosen_variant_fails_the_next_faster_one_answers_and_the_note_says_why()
    {
        var (provider, client, large, _) = await CreateAsync(TimeSpan.FromMilliseconds(30));
        await using var owned = provider;
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");

        using var r = await client.InferAsync("auto", FakeBackend.Request(1));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal("auto", r.Model);
        Assert.Equal("small", r.AnsweredBy);
        Assert.NotNull(r.Note);
        Assert.Contains("Variant 'large' failed: Model 'large' failed on instance large/1/0: CUDA error: device lost", r.Note, StringComparison.Ordinal);
        Assert.EndsWith("Variant 'small' answered.", r.Note, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_failure_of_the_fastest_variant_stays_an_error()
    {
        var (provider, client, large, small) = await CreateAsync(TimeSpan.FromMilliseconds(30));
        await using var owned = provider;
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        small.Failure = () => new InvalidOperationException("out of memory");

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(async () => await client.InferAsync("auto", FakeBackend.Request(1)));
        Assert.Equal("small", ex.Model);
        Assert.Contains("out of memory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_cancelled_while_its_variant_runs_and_then_fails_is_cancelled_rather_than_answered_by_the_next_variant()
    {
        var (provider, client, large, _) = await CreateAsync(TimeSpan.FromMilliseconds(30));
        await using var owned = provider;
        using var release = new GateOpener(large.Release); // disposed before the provider, which waits for a held run
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        large.Hold();
        using var cts = new CancellationTokenSource();
        var call = Task.Run(async () => await client.InferAsync("auto", FakeBackend.Request(1, timeout: TimeSpan.FromSeconds(10)), cts.Token));
        await large.Entered.WaitAsync(TimeSpan.FromSeconds(30));
        await cts.CancelAsync();
        large.Release();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
    }

    [Fact]
    public async Task A_refusal_by_the_last_variant_tried_is_the_adaptive_models_answer_and_its_message_still_names_that_variant()
    {
        var (provider, client, _, _) = await CreateAsync(TimeSpan.FromMilliseconds(30));
        await using var owned = provider;

        // A critical request goes straight to "small", whose 3 ms runs cannot meet a 1 ms deadline.
        using var r = await client.InferAsync("auto", FakeBackend.Request(1, InferencePriority.Critical, TimeSpan.FromMilliseconds(1)));
        Assert.Equal(RefusalReason.DeadlineInfeasible, r.RefusalReason);
        Assert.Equal("auto", r.Model);
        Assert.StartsWith("Model 'small': the deadline", r.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_with_no_timeout_at_all_is_not_cut_short_by_a_variants_default_timeout()
    {
        var time = new FakeTimeProvider();
        var large = new FakeBackend("large", time: time, computeTime: _ => TimeSpan.FromMilliseconds(300));
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("large", _ => large, o => o.Batching.DefaultTimeout = TimeSpan.FromMilliseconds(100))
            .AddModel("small", _ => new FakeBackend("small"))
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
            });
        await using var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        var client = provider.GetRequiredService<IInferenceClient>();

        // Timeout.InfiniteTimeSpan asks for no timeout, not even a model's default: "large" runs 300 ms and answers.
        using var r = await client.InferAsync("auto", FakeBackend.Request(1, timeout: Timeout.InfiniteTimeSpan));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal("large", r.AnsweredBy);
    }

    /// <summary>
    /// "auto" over "large" and "small" on a fake clock, neither loaded; a model whose gate is given loads only once the
    /// gate opens. "large" is built by <paramref name="large"/> when given.
    /// </summary>
    private static (ServiceProvider Provider, IModelRegistry Registry, IInferenceClient Client, FakeTimeProvider Time) CreateCold(
        Gate? largeGate, Gate? smallGate, Func<FakeTimeProvider, FakeBackend>? large = null)
    {
        var time = new FakeTimeProvider();
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("large", _ =>
            {
                largeGate?.Wait();
                return large?.Invoke(time) ?? new FakeBackend("large");
            }, o => o.Batching.MaxBatchSize = 1)
            .AddModel("small", _ =>
            {
                smallGate?.Wait();
                return new FakeBackend("small");
            }, o => o.Batching.MaxBatchSize = 1)
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
                a.DefaultBudget = TimeSpan.FromMilliseconds(50);
            });
        var provider = services.BuildServiceProvider();
        return (provider, provider.GetRequiredService<IModelRegistry>(), provider.GetRequiredService<IInferenceClient>(), time);
    }

    [Fact]
    public async Task A_more_accurate_variant_not_loaded_yet_is_not_waited_for_a_loaded_one_answers_and_the_load_starts_in_the_background()
    {
        var gate = new Gate("the load of 'large'");
        var (provider, registry, client, _) = CreateCold(gate, null);
        await using var owned = provider;
        await registry.LoadAsync("small");
        try
        {
            Assert.Equal(ModelState.NotLoaded, registry.GetModel("large").State);

            // The WaitAsync is only a safety net: before, the request waited for the whole load of "large", held at the gate.
            using var r = await client.InferAsync("auto", FakeBackend.Request(1)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("small", r.AnsweredBy);
            Assert.Equal(
                "Variant 'large' could not answer (Refused ModelNotReady): Model 'large' is not available: it is not loaded yet; its load has started in the background. Variant 'small' answered.",
                r.Note);
            Assert.Equal(ModelState.Loading, registry.GetModel("large").State);
        }
        finally
        {
            gate.Open();
        }

        await registry.LoadAsync("large"); // the load the request started
        using var later = await client.InferAsync("auto", FakeBackend.Request(2));
        Assert.Equal("large", later.AnsweredBy);
    }

    [Fact]
    public async Task When_the_faster_variant_is_not_loaded_yet_a_loaded_more_accurate_one_answers_rather_than_wait_for_the_load()
    {
        var gate = new Gate("the load of 'small'");
        var (provider, registry, client, _) = CreateCold(null, gate,
            time => new FakeBackend("large", time: time, computeTime: _ => TimeSpan.FromMilliseconds(300)));
        await using var owned = provider;
        await registry.LoadAsync("large"); // its warm-up teaches it 300 ms a run
        try
        {
            // 80% of 350 ms does not fit large's predicted 300 ms, so "small" is chosen; it is not loaded, so "large",
            // which can still answer in time, does.
            using var r = await client.InferAsync("auto", FakeBackend.Request(1, timeout: TimeSpan.FromMilliseconds(350))).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal("large", r.AnsweredBy);
            Assert.Equal(
                "Variant 'small' could not answer (Refused ModelNotReady): Model 'small' is not available: it is not loaded yet; its load has started in the background. Variant 'large' answered.",
                r.Note);
            Assert.Equal(ModelState.Loading, registry.GetModel("small").State);
        }
        finally
        {
            gate.Open();
        }
    }

    [Fact]
    public async Task With_no_variant_loaded_a_request_waits_for_a_load_only_until_its_deadline_and_is_then_refused_with_a_retry_after_hint()
    {
        var largeGate = new Gate("the load of 'large'");
        var smallGate = new Gate("the load of 'small'");
        var (provider, registry, client, time) = CreateCold(largeGate, smallGate);
        await using var owned = provider;
        try
        {
            var call = client.InferAsync("auto", FakeBackend.Request(1, timeout: TimeSpan.FromMilliseconds(50))).AsTask();

            // The request started every variant's load and waits for one of them, while one could still answer in time.
            Assert.Equal(ModelState.Loading, registry.GetModel("large").State);
            Assert.Equal(ModelState.Loading, registry.GetModel("small").State);
            Assert.False(call.IsCompleted);

            // 48 ms later only the 2 ms delivery margin is left: refused, the loads going on.
            time.Advance(TimeSpan.FromMilliseconds(48));
            using var r = await call.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(InferenceStatus.Refused, r.Status);
            Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
            Assert.Equal("auto", r.Model);
            Assert.Equal(TimeSpan.FromMilliseconds(48), r.RetryAfter);
            Assert.Equal(
                "Model 'auto': no variant is loaded, and none finished loading in time for the request's deadline (2.0 ms away, 2.0 ms of it kept as the delivery margin): variant 'large' is loading (48 ms so far); variant 'small' is loading (48 ms so far). The loads go on in the background.",
                r.Message);
            Assert.Equal(ModelState.Loading, registry.GetModel("small").State);

            // A request that arrives while the loads run is answered as soon as one of them finishes within its deadline.
            var next = client.InferAsync("auto", FakeBackend.Request(2, timeout: TimeSpan.FromMilliseconds(50))).AsTask();
            smallGate.Open();
            using var answered = await next.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(answered.IsSuccess, answered.Message);
            Assert.Equal("small", answered.AnsweredBy);
            Assert.Contains("Model 'large' is not available: it is still loading.", answered.Note, StringComparison.Ordinal);
        }
        finally
        {
            largeGate.Open();
            smallGate.Open();
        }
    }

    [Fact]
    public async Task The_refusal_with_no_variant_loaded_writes_its_numbers_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        var largeGate = new Gate("the load of 'large'");
        var smallGate = new Gate("the load of 'small'");
        var (provider, _, client, time) = CreateCold(largeGate, smallGate);
        await using var owned = provider;
        try
        {
            var call = client.InferAsync("auto", FakeBackend.Request(1, timeout: TimeSpan.FromMilliseconds(50))).AsTask();
            time.Advance(TimeSpan.FromMilliseconds(48));
            using var r = await call.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
            Assert.Matches(@"deadline \(\d+\.\d ms away, \d+\.\d ms of it kept as the delivery margin\)", r.Message);
        }
        finally
        {
            // Before the provider's disposal, which waits for the loads.
            largeGate.Open();
            smallGate.Open();
        }
    }

    /// <summary>"auto" over "large" (<paramref name="largeCompute"/> a run) and "small" (3 ms), a 50 ms default budget, on fake time.</summary>
    private static async Task<(ServiceProvider Provider, IInferenceClient Client, FakeBackend Large, FakeBackend Small)> CreateAsync(TimeSpan largeCompute)
    {
        var time = new FakeTimeProvider();
        var large = new FakeBackend("large", time: time, computeTime: _ => largeCompute);
        var small = new FakeBackend("small", time: time, computeTime: _ => TimeSpan.FromMilliseconds(3));
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(time);
        services.AddInferKit()
            .AddModel("large", _ => large, o => o.Batching.MaxBatchSize = 1)
            .AddModel("small", _ => small, o => o.Batching.MaxBatchSize = 1)
            .AddAdaptiveModel("auto", a =>
            {
                a.Variants.Add("large");
                a.Variants.Add("small");
                a.DefaultBudget = TimeSpan.FromMilliseconds(50);
            });
        var provider = services.BuildServiceProvider();

        // One at a time: each load runs a warm-up batch, and a fake run advances the shared fake clock by its compute
        // time, so two warm-ups at once would each measure the other's time (small learning about 300 ms a batch).
        var registry = provider.GetRequiredService<IModelRegistry>();
        await registry.LoadAsync("large");
        await registry.LoadAsync("small");
        await registry.LoadAllAsync();
        return (provider, provider.GetRequiredService<IInferenceClient>(), large, small);
    }
}
