namespace InferKit.Scheduling;

/// <summary>
/// The running estimate the scheduler's models keep of a noisy measure: an exponentially weighted mean and mean
/// absolute deviation, so that a cautious value (mean ± 2 × deviation) judges by a bad-but-usual sample, not an average one.
/// </summary>
internal static class SpreadEstimate
{
    private const double Alpha = 0.2;

    /// <summary>How many deviations a cautious value lies from the mean.</summary>
    public const double DeviationWeight = 2;

    /// <summary>Folds <paramref name="sample"/> into <paramref name="mean"/> and <paramref name="deviation"/> (a mean of 0 means none yet).</summary>
    public static void Add(ref double mean, ref double deviation, double sample)
    {
        if (mean == 0)
        {
            mean = sample;
            return;
        }

        deviation = (deviation * (1 - Alpha)) + (Math.Abs(sample - mean) * Alpha);
        mean = (mean * (1 - Alpha)) + (sample * Alpha);
    }
}
