using InferKit.Models;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Models;

/// <summary>A request to a model whose load has not finished waits for the load only while it could still be answered in time.</summary>
public sealed class LoadWaitTests
{
    /// <summary>A safety net only: before, a request waited for the whole load, held at its gate.</summary>
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    /// <summary>Models over fake backends on a fake clock, not loaded; each load waits for <paramref name="gate"/>.</summary>
    private sealed class Cold : IAsyncDisposable
    {
        private readonly ServiceProvider _provider;

        public Cold(Gate gate, Action<string, ModelOptions>? configure, params string[] models)
        {
            var services = new ServiceCollection();
            services.AddSingleton<TimeProvider>(Time);
            var builder = services.AddInferKit();
            foreach (var model in models)
            {
                var backend = new FakeBackend(model);
                Backends[model] = backend;
                builder.AddModel(model, _ =>
                {
                    gate.Wait();
                    return backend;
                }, o =>
                {
                    o.Batching.MaxBatchSize = 1;
                    configure?.Invoke(model, o);
                });
            }

            _provider = services.BuildServiceProvider();
        }

        public FakeTimeProvider Time { get; } = new();

        public Dictionary<string, FakeBackend> Backends { get; } = [];

        public IModelRegistry Registry => _provider.GetRequiredService<IModelRegistry>();

        public IInferenceClient Client => _provider.GetRequiredService<IInferenceClient>();

        public ValueTask DisposeAsync() => _provider.DisposeAsync();
    }

    [Theory]
    [InlineData("timeout", "en-US")]
    [InlineData("deadline", "de-DE")]
    [InlineData("default timeout", "de-DE")]
    public async Task A_request_with_a_deadline_waits_for_the_load_only_until_the_delivery_margin_is_left_and_is_then_refused_while_the_load_goes_on(string deadlineFrom, string culture)
    {
        // The message's numbers are written the same way under a culture whose decimal separator is a comma.
        using var scope = new CultureScope(culture);
        var gate = new Gate("the loads");
        await using var cold = new Cold(gate, (_, o) =>
        {
            o.Batching.DeliveryMargin = 10 * Ms;
            if (deadlineFrom == "default timeout")
            {
                o.Batching.DefaultTimeout = 50 * Ms;
            }
        }, "m");
        try
        {
            var request = deadlineFrom switch
            {
                "timeout" => FakeBackend.Request(1, timeout: 50 * Ms),
                "deadline" => new InferenceRequest(FakeBackend.Request(1).Inputs.ToArray()) { Id = "1", Deadline = cold.Time.GetUtcNow() + (50 * Ms) },
                _ => FakeBackend.Request(1),
            };
            var call = cold.Client.InferAsync("m", request).AsTask();
            Assert.Equal(ModelState.Loading, cold.Registry.GetModel("m").State);

            // It waits while the load could still finish in time: until the 10 ms delivery margin is all that is left.
            cold.Time.Advance(39 * Ms);
            Assert.False(call.IsCompleted);
            cold.Time.Advance(Ms);
            using var r = await call.WaitAsync(Guard);
            Assert.Equal(InferenceStatus.Refused, r.Status);
            Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
            Assert.Equal("m", r.Model);
            Assert.Equal("1", r.RequestId);
            Assert.Equal(40 * Ms, r.RetryAfter);
            Assert.Equal(
                "Model 'm' is not available: it is still loading (40 ms so far), and the load did not finish in time for the request's deadline (10.0 ms away, 10.0 ms of it kept as the delivery margin). The load goes on in the background.",
                r.Message);
            Assert.Equal(ModelState.Loading, cold.Registry.GetModel("m").State);
        }
        finally
        {
            gate.Open();
        }

        await cold.Registry.LoadAsync("m"); // the load the request started
        using var later = await cold.Client.InferAsync("m", FakeBackend.Request(2, timeout: 50 * Ms));
        Assert.True(later.IsSuccess, later.Message);
    }

    [Fact]
    public async Task A_request_with_no_deadline_at_all_waits_for_the_whole_load_while_one_with_a_deadline_is_refused_or_cancelled()
    {
        var gate = new Gate("the loads");
        await using var cold = new Cold(gate, (model, o) => o.Batching.DefaultTimeout = model == "m" ? 50 * Ms : null, "m", "plain");
        try
        {
            // No timeout at all (not even m's default), and no timeout on a model without a default: no deadline.
            var infinite = cold.Client.InferAsync("m", FakeBackend.Request(1, timeout: Timeout.InfiniteTimeSpan)).AsTask();
            var plain = cold.Client.InferAsync("plain", FakeBackend.Request(2)).AsTask();

            // m's default timeout gives this one a deadline: refused once only the 2 ms delivery margin is left.
            var bounded = cold.Client.InferAsync("m", FakeBackend.Request(3)).AsTask();

            // The caller's token cancels the wait, not the load.
            using var cts = new CancellationTokenSource();
            var cancelled = cold.Client.InferAsync("m", FakeBackend.Request(4), cts.Token).AsTask();
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(Guard));

            cold.Time.Advance(48 * Ms);
            using (var r = await bounded.WaitAsync(Guard))
            {
                Assert.Equal(RefusalReason.ModelNotReady, r.RefusalReason);
                Assert.Equal(48 * Ms, r.RetryAfter);
            }

            cold.Time.Advance(TimeSpan.FromHours(1));
            Assert.False(infinite.IsCompleted);
            Assert.False(plain.IsCompleted);
            Assert.Equal(ModelState.Loading, cold.Registry.GetModel("m").State);

            gate.Open();
            using var answeredInfinite = await infinite.WaitAsync(Guard);
            using var answeredPlain = await plain.WaitAsync(Guard);
            Assert.True(answeredInfinite.IsSuccess, answeredInfinite.Message);
            Assert.True(answeredPlain.IsSuccess, answeredPlain.Message);
            Assert.Equal([2f, 0f], answeredInfinite["y"].GetSpan<float>().ToArray());
        }
        finally
        {
            gate.Open();
        }
    }

    [Fact]
    public async Task A_request_whose_load_finishes_in_time_is_answered_and_the_wait_for_the_load_counts_against_its_deadline()
    {
        var gate = new Gate("the loads");
        await using var cold = new Cold(gate, null, "a", "b");
        var (a, b) = (cold.Backends["a"], cold.Backends["b"]);
        try
        {
            var callA = cold.Client.InferAsync("a", FakeBackend.Request(1, timeout: 100 * Ms)).AsTask();
            var callB = cold.Client.InferAsync("b", FakeBackend.Request(2, timeout: 100 * Ms)).AsTask();

            // Both loads finish 60 ms after the requests came, in time: both requests run (held there).
            cold.Time.Advance(60 * Ms);
            a.Hold();
            b.Hold();
            gate.Open();
            await a.Entered.WaitAsync(Guard);
            await b.Entered.WaitAsync(Guard);

            // a's run ends 90 ms after its request came: answered.
            cold.Time.Advance(30 * Ms);
            a.Release();
            using var answered = await callA.WaitAsync(Guard);
            Assert.True(answered.IsSuccess, answered.Message);
            Assert.Equal([2f, 0f], answered["y"].GetSpan<float>().ToArray());

            // b's run ends 110 ms after its request came: past its 100 ms timeout, counted from its arrival rather than
            // from the end of the load, so it is not answered late.
            cold.Time.Advance(20 * Ms);
            b.Release();
            using var late = await callB.WaitAsync(Guard);
            Assert.Equal(InferenceStatus.DeadlineExceeded, late.Status);
        }
        finally
        {
            gate.Open();
            a.Release();
            b.Release();
        }
    }
}
