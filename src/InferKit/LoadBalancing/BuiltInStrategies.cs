namespace InferKit.LoadBalancing;

internal sealed class RoundRobinStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.RoundRobin;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.InstanceCount);

    private sealed class Selector(int instanceCount) : IInstanceSelector
    {
        private int _next = -1;

        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
        {
            // Advance a cursor over instance indices and take the first candidate at or after it, so a busy
            // instance is skipped without disturbing the rotation of the others.
            int cursor = (int)((uint)Interlocked.Increment(ref _next) % (uint)Math.Max(1, instanceCount));
            int best = 0;
            int bestDistance = int.MaxValue;
            for (int i = 0; i < candidates.Length; i++)
            {
                int distance = (candidates[i].Index - cursor + instanceCount) % Math.Max(1, instanceCount);
                if (distance < bestDistance)
                {
                    bestDistance = distance;
                    best = i;
                }
            }

            return best;
        }
    }
}

internal sealed class LeastConnectionsStrategy : ILoadBalancingStrategy
{
    public string Name => LoadBalancingStrategies.LeastConnections;

    public IInstanceSelector CreateSelector(LoadBalancingContext context) => new Selector(context.Random);

    private sealed class Selector(IRandomSource random) : IInstanceSelector
    {
        public int Pick(ReadOnlySpan<InstanceLoad> candidates)
        {
            // Fewest outstanding rows; ties broken at random so equal instances share the load.
            int best = -1;
            int ties = 0;
            for (int i = 0; i < candidates.Length; i++)
            {
                if (best < 0 || candidates[i].OutstandingRows < candidates[best].OutstandingRows)
                {
                    best = i;
                    ties = 1;
                }
                else if (candidates[i].OutstandingRows == candidates[best].OutstandingRows && random.NextInt32(++ties) == 0)
                {
                    best = i;
                }
            }

            return best;
        }
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
