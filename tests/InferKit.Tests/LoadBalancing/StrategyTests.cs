using InferKit.LoadBalancing;

namespace InferKit.Tests.LoadBalancing;

public sealed class StrategyTests
{
    private sealed class ScriptedRandom(params int[] values) : IRandomSource
    {
        private int _next;

        public int NextInt32(int maxExclusive) => values[_next++ % values.Length] % maxExclusive;

        public double NextDouble() => 0.5;
    }

    private static IInstanceSelector Create(ILoadBalancingStrategy strategy, int instances, IRandomSource? random = null)
        => strategy.CreateSelector(new LoadBalancingContext("m", instances, random ?? new ScriptedRandom(0)));

    private static InstanceLoad Load(int index, int outstanding = 0, int rows = 0, double weight = 1, double latency = 0, int max = 1) => new()
    {
        Index = index,
        Outstanding = outstanding,
        OutstandingRows = rows,
        Weight = weight,
        SmoothedLatencySeconds = latency,
        MaxConcurrency = max,
    };

    [Fact]
    public void RoundRobin_takes_each_instance_in_turn_and_skips_busy_ones()
    {
        var s = Create(new RoundRobinStrategy(), 3);
        InstanceLoad[] idle = [Load(0), Load(1), Load(2)];
        Assert.Equal([0, 1, 2, 0, 1], Enumerable.Range(0, 5).Select(_ => s.Pick(idle)).ToArray());

        InstanceLoad[] busy1 = [Load(0), Load(1, outstanding: 1), Load(2)];
        Assert.Equal(2, s.Pick(busy1)); // cursor at 2
        Assert.Equal(0, s.Pick(busy1)); // cursor at 0
        Assert.Equal(2, s.Pick(busy1)); // cursor at 1 (busy) → next with room is 2
    }

    /// <summary>
    /// An instance taken out of rotation is not among the candidates: the ones left take turns evenly, rather than its
    /// successor taking its turns too (twice the work of the other instance for the whole back-off).
    /// </summary>
    [Fact]
    public void RoundRobin_shares_evenly_among_the_instances_left_in_rotation()
    {
        var s = Create(new RoundRobinStrategy(), 3);
        InstanceLoad[] without1 = [Load(0), Load(2)];
        var picks = Enumerable.Range(0, 6).Select(_ => without1[s.Pick(without1)].Index).ToArray();
        Assert.Equal([0, 2, 0, 2, 0, 2], picks);

        // Back in rotation: each of the three in turn again.
        InstanceLoad[] all = [Load(0), Load(1), Load(2)];
        var again = Enumerable.Range(0, 6).Select(_ => s.Pick(all)).ToArray();
        Assert.Equal(2, again.Count(static i => i == 0));
        Assert.Equal(2, again.Count(static i => i == 1));
        Assert.Equal(2, again.Count(static i => i == 2));
    }

    [Fact]
    public void LeastConnections_picks_the_least_outstanding_work_and_breaks_ties_with_the_injected_random()
    {
        var s = Create(new LeastConnectionsStrategy(), 3, new ScriptedRandom(0));
        Assert.Equal(1, s.Pick([Load(0, 1, 8, max: 2), Load(1, 1, 2, max: 2), Load(2, 1, 5, max: 2)]));

        // Three ties; reservoir sampling with the scripted values (0, then 0) keeps replacing: the last tie wins.
        Assert.Equal(2, s.Pick([Load(0), Load(1), Load(2)]));
        var first = Create(new LeastConnectionsStrategy(), 3, new ScriptedRandom(1));
        Assert.Equal(0, first.Pick([Load(0), Load(1), Load(2)]));
    }

    [Fact]
    public void PowerOfTwoChoices_compares_two_random_instances_with_room()
    {
        var s = Create(new PowerOfTwoChoicesStrategy(), 4, new ScriptedRandom(0, 2));
        // Random picks positions 0 and 3 (2 shifted past 0); 3 has less work.
        Assert.Equal(3, s.Pick([Load(0, 1, 9, max: 4), Load(1, 1, 1, max: 4), Load(2, 1, 1, max: 4), Load(3, 1, 4, max: 4)]));
        // The busy instance (no room) is never one of the two.
        var t = Create(new PowerOfTwoChoicesStrategy(), 3, new ScriptedRandom(0, 0));
        Assert.Equal(1, t.Pick([Load(0, outstanding: 1), Load(1), Load(2)]));
    }

    [Fact]
    public void WeightedLeastConnections_splits_in_proportion_to_weights()
    {
        var s = Create(new WeightedLeastConnectionsStrategy(), 2, new ScriptedRandom(0));
        var outstanding = new int[2];
        var counts = new int[2];
        double[] weights = [3, 1];
        for (int n = 0; n < 400; n++)
        {
            InstanceLoad[] c = [Load(0, outstanding[0], weight: weights[0], max: 1000), Load(1, outstanding[1], weight: weights[1], max: 1000)];
            int pick = s.Pick(c);
            counts[pick]++;
            outstanding[pick]++;
        }

        Assert.Equal(300, counts[0]);
        Assert.Equal(100, counts[1]);
    }

    [Fact]
    public void PeakEwma_prefers_low_latency_and_waits_for_a_fast_busy_instance_over_a_much_slower_idle_one()
    {
        var s = Create(new PeakEwmaStrategy(), 3, new ScriptedRandom(0));
        // Both idle: lower latency wins.
        Assert.Equal(1, s.Pick([Load(0, latency: 0.010), Load(1, latency: 0.002)]));
        // Fast one busy (cost 2×2 ms) vs slow idle (cost 1×10 ms): wait for the fast one.
        var pick = s.Pick([Load(0, latency: 0.010), Load(1, outstanding: 1, latency: 0.002)]);
        Assert.Equal(1, pick);
        // Fast one busy but the other only slightly slower: take the idle one.
        Assert.Equal(0, s.Pick([Load(0, latency: 0.003), Load(1, outstanding: 1, latency: 0.002)]));
        // An instance never measured is tried (it gets the best measured latency, and is idle).
        Assert.Equal(2, s.Pick([Load(0, outstanding: 1, latency: 0.002), Load(1, latency: 0.010), Load(2)]));
    }
}
