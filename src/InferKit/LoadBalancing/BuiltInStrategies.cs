namespace InferKit.LoadBalancing;

internal sealed class RoundRobinStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.RoundRobin;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector();

    private sealed class Selector : IInstanceSelector
    {
        private int _next = -1;

        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
        {
            // Advance a cursor over the candidates (the instances in rotation, in index order) and take the first one with
            // room at or after it, so a busy instance is skipped without disturbing the rotation of the others. The cursor
            // runs over the candidates, not over every instance: one taken out of rotation leaves the others taking turns
            // evenly, instead of its successor taking its turns as well.
            int n = candidates.Length;
            int cursor = (int)((uint)Interlocked.Increment(ref _next) % (uint)Math.Max(1, n));
            for (int k = 0; k < n; k++)
            {
                int i = cursor + k < n ? cursor + k : cursor + k - n;
                if (candidates[i].HasRoom)
                {
                    return i;
                }
            }

            return 0;
        }
    }
}

internal sealed class LeastConnectionsStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.LeastConnections;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.Random);

    private sealed class Selector(IRandomSource random) : IInstanceSelector
    {
        // Fewest outstanding rows among those with room; ties broken at random so equal instances share the load.
        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
            => Scoring.ArgMin(candidates, random, roomOnly: true, 0, static (c, _) => c.OutstandingRows);
    }
}

/// <summary>The default random source: <see cref="Random.Shared"/>, or a seeded generator behind a lock.</summary>
internal sealed class DefaultRandomSource : IRandomSource
{
    private readonly Random? _seeded;
    private readonly Lock _gate = new();

    public DefaultRandomSource(int? seed) => _seeded = seed is int s ? new Random(s) : null;

    public int NextInt32(int maxExclusive)
    {
        if (_seeded is null)
        {
            return Random.Shared.Next(maxExclusive);
        }

        lock (_gate)
        {
            return _seeded.Next(maxExclusive);
        }
    }

    public double NextDouble()
    {
        if (_seeded is null)
        {
            return Random.Shared.NextDouble();
        }

        lock (_gate)
        {
            return _seeded.NextDouble();
        }
    }
}

internal sealed class WeightedLeastConnectionsStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.WeightedLeastConnections;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.Random);

    private sealed class Selector(IRandomSource random) : IInstanceSelector
    {
        // (outstanding + 1) / weight over every instance in rotation: the +1 counts the batch being placed. A busy
        // instance can win, and then the batch waits for it rather than go to a much slower idle one.
        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
            => Scoring.ArgMin(candidates, random, roomOnly: false, 0, static (c, _) => (c.Outstanding + 1) / Math.Max(c.Weight, 1e-9));
    }
}

internal sealed class PowerOfTwoChoicesStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.PowerOfTwoChoices;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.Random);

    private sealed class Selector(IRandomSource random) : IInstanceSelector
    {
        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
        {
            // Two distinct random instances with room; the one with less outstanding work wins.
            Span<int> room = candidates.Length <= 64 ? stackalloc int[candidates.Length] : new int[candidates.Length];
            int n = 0;
            for (int i = 0; i < candidates.Length; i++)
            {
                if (candidates[i].HasRoom)
                {
                    room[n++] = i;
                }
            }

            if (n == 1)
            {
                return room[0];
            }

            int a = random.NextInt32(n);
            int b = random.NextInt32(n - 1);
            if (b >= a)
            {
                b++;
            }

            a = room[a];
            b = room[b];
            return candidates[b].OutstandingRows < candidates[a].OutstandingRows ? b : a;
        }
    }
}

internal sealed class PeakEwmaStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.PeakEwma;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.Random);

    private sealed class Selector(IRandomSource random) : IInstanceSelector
    {
        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
        {
            // Cost = peak-sensitive latency × (outstanding + 1). Instances never measured get the lowest
            // measured latency, so a new instance is tried instead of avoided.
            double floor = double.MaxValue;
            foreach (var c in candidates)
            {
                if (c.SmoothedLatencySeconds > 0)
                {
                    floor = Math.Min(floor, c.SmoothedLatencySeconds);
                }
            }

            if (floor == double.MaxValue)
            {
                floor = 1;
            }

            return Scoring.ArgMin(candidates, random, roomOnly: false, floor,
                static (c, floor) => (c.SmoothedLatencySeconds > 0 ? c.SmoothedLatencySeconds : floor) * (c.Outstanding + 1));
        }
    }
}

/// <summary>The shared choice rule of the scoring strategies.</summary>
internal static class Scoring
{
    /// <summary>The candidate with the lowest score (only those with room when asked); ties broken at random, evenly.</summary>
    public static int ArgMin<TState>(ReadOnlySpan<InstanceLoad> candidates, IRandomSource random, bool roomOnly, TState state, Func<InstanceLoad, TState, double> score)
    {
        int best = -1;
        double bestScore = double.MaxValue;
        int ties = 0;
        for (int i = 0; i < candidates.Length; i++)
        {
            if (roomOnly && !candidates[i].HasRoom)
            {
                continue;
            }

            double value = score(candidates[i], state);
            if (best < 0 || value < bestScore)
            {
                best = i;
                bestScore = value;
                ties = 1;
            }
            else if (value == bestScore && random.NextInt32(++ties) == 0)
            {
                best = i;
            }
        }

        return best;
    }
}
