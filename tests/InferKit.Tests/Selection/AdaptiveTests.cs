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
        await large.Entered;
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
        large.Failure = () => new InvalidOperationException("CUDA error: device lost");
        large.Hold();
        using var cts = new CancellationTokenSource();
        var call = Task.Run(async () => await client.InferAsync("auto", FakeBackend.Request(1, timeout: TimeSpan.FromSeconds(10)), cts.Token));
        await large.Entered;
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
