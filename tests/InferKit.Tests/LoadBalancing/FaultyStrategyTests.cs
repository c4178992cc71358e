using InferKit.LoadBalancing;
using InferKit.Tests.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace InferKit.Tests.LoadBalancing;

/// <summary>
/// A custom strategy is user code, and its Pick runs wherever a batch is formed: on the caller's thread, a pool work
/// item, the runner thread or the scheduler's timer. One that throws, or answers an index out of range, must not crash
/// the process or lose a queued request: the least-loaded instance with room is used instead, and the failure logged.
/// </summary>
public sealed class FaultyStrategyTests
{
    /// <summary>Picks the last candidate while it behaves; when faulty, throws or answers an index out of range.</summary>
    private sealed class FaultyStrategy(bool throws) : ILoadBalancingStrategy
    {
        private volatile bool _faulty;

        public bool Faulty
        {
            get => _faulty;
            set => _faulty = value;
        }

        public string Name => "Faulty";

        public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(this, throws);

        private sealed class Selector(FaultyStrategy owner, bool throws) : IInstanceSelector
        {
            public int Pick(ReadOnlySpan<InstanceLoad> candidates)
            {
                if (!owner.Faulty)
                {
                    return candidates.Length - 1;
                }

                return throws ? throw new InvalidOperationException("strategy boom") : candidates.Length + 5;
            }
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_strategy_that_fails_on_the_timer_or_the_callers_path_does_not_crash_or_lose_requests(bool throws)
    {
        var strategy = new FaultyStrategy(throws);
        await using var h = TelemetryHarness.Create(o =>
        {
            o.LoadBalancing = "Faulty";
            o.Batching.MaxBatchSize = 4;
            o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(10);
        }, instances: 2, services: s => s.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy>(strategy)));
        await h.LoadAsync();

        // Queued while the strategy behaves: the batch waits for MaxQueueDelay, then forms on the timer.
        var queued = Enumerable.Range(1, 3).Select(i => h.Send(i).AsTask()).ToArray();
        strategy.Faulty = true;
        h.Time.Advance(TimeSpan.FromMilliseconds(10));
        foreach (var t in queued)
        {
            using var r = await t.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(r.IsSuccess, r.Message);
        }

        // On the caller's path too: the request is answered, not thrown back after it was queued.
        var late = h.Send(10).AsTask();
        h.Time.Advance(TimeSpan.FromMilliseconds(10));
        using (var r = await late.WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        var logged = h.Logs.Collector.GetSnapshot().Where(r => r.Id.Id == 3003).ToList();
        Assert.NotEmpty(logged);
        Assert.Equal(LogLevel.Error, logged[0].Level);
        Assert.Contains("Model 'm': load-balancing strategy 'Faulty'", logged[0].Message, StringComparison.Ordinal);
        Assert.Contains(throws ? "strategy boom" : "returned 7 for 2 candidates", logged[0].Exception?.Message ?? string.Empty, StringComparison.Ordinal);
    }
}
