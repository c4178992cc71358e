using System.Runtime.InteropServices;

namespace InferKit.LoadBalancing;

/// <summary>
/// A way of choosing which instance of a model runs the next batch. Strategies are registered in DI
/// (<c>TryAddEnumerable</c>) and chosen per model by <see cref="Name"/>, case-insensitively.
/// </summary>
public interface ILoadBalancingStrategy
{
    /// <summary>The name models refer to in <c>ModelOptions.LoadBalancing</c>.</summary>
    string Name { get; }

    /// <summary>Creates the selector for one model; it may keep per-model state (a round-robin cursor, say).</summary>
    IInstanceSelector CreateSelector(LoadBalancingContext context);
}

/// <summary>
/// Chooses the instance for the next batch among the instances in rotation. Called concurrently; must be thread-safe.
/// </summary>
public interface IInstanceSelector
{
    /// <summary>
    /// Returns the position in <paramref name="candidates"/> of the chosen instance. At least one candidate has room
    /// (<see cref="InstanceLoad.HasRoom"/>). Choosing a busy instance means "wait for it": the batch is formed when
    /// that instance frees up, which lets latency-aware strategies keep work off a slow instance. When it throws or
    /// returns a position out of range, the least-loaded candidate with room is used instead and the failure is logged.
    /// </summary>
    int Pick(ReadOnlySpan<InstanceLoad> candidates);
}

/// <summary>What a strategy knows about the model it balances.</summary>
/// <param name="ModelName">The model.</param>
/// <param name="InstanceCount">How many instances it has.</param>
/// <param name="Random">The injected random source (seeded through InferKitOptions.RandomSeed for reproducible runs). Thread-safe.</param>
public sealed record LoadBalancingContext(string ModelName, int InstanceCount, IRandomSource Random);

/// <summary>A thread-safe source of random numbers, injected so strategies are deterministic under test.</summary>
public interface IRandomSource
{
    /// <summary>A non-negative integer less than <paramref name="maxExclusive"/>.</summary>
    int NextInt32(int maxExclusive);

    /// <summary>A double in [0, 1).</summary>
    double NextDouble();
}

/// <summary>The load of one candidate instance at the moment of choice.</summary>
[StructLayout(LayoutKind.Auto)]
public readonly record struct InstanceLoad
{
    /// <summary>The instance's index within the model (stable for the model's lifetime).</summary>
    public int Index { get; init; }

    /// <summary>Batches running on it now.</summary>
    public int Outstanding { get; init; }

    /// <summary>Rows running on it now.</summary>
    public int OutstandingRows { get; init; }

    /// <summary>How many batches it may run at once.</summary>
    public int MaxConcurrency { get; init; }

    /// <summary>Its relative capacity (configured, or learned from measured throughput).</summary>
    public double Weight { get; init; }

    /// <summary>Peak-sensitive smoothed batch latency in seconds; 0 before the first measurement.</summary>
    public double SmoothedLatencySeconds { get; init; }

    /// <summary>Batches completed.</summary>
    public long Completed { get; init; }

    /// <summary>True when it can take another batch now.</summary>
    public bool HasRoom => Outstanding < MaxConcurrency;
}

/// <summary>The names of the built-in strategies.</summary>
public static class LoadBalancingStrategies
{
    /// <summary>Each instance in turn.</summary>
    public const string RoundRobin = "RoundRobin";

    /// <summary>The instance with the least outstanding work.</summary>
    public const string LeastConnections = "LeastConnections";

    /// <summary>The instance with the least outstanding work relative to its weight.</summary>
    public const string WeightedLeastConnections = "WeightedLeastConnections";

    /// <summary>The less loaded of two instances picked at random.</summary>
    public const string PowerOfTwoChoices = "PowerOfTwoChoices";

    /// <summary>The instance with the lowest smoothed latency times outstanding work (reacts to latency spikes at once).</summary>
    public const string PeakEwma = "PeakEwma";
}
