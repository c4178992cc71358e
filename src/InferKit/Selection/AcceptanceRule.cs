using System.Globalization;
namespace InferKit.Selection;

/// <summary>Decides from one row of scores whether a cascade stage's answer is good enough to return.</summary>
/// <param name="scores">The row's values of the rule's output (probabilities, or logits when the rule applies softmax).</param>
public delegate bool RowAcceptance(ReadOnlySpan<float> scores);

/// <summary>How a cascade stage judges its own answer, row by row.</summary>
public enum AcceptanceKind
{
    /// <summary>Accept when the top probability is at least the threshold.</summary>
    TopProbability,
    /// <summary>Accept when the top probability minus the second is at least the threshold.</summary>
    Margin,
    /// <summary>Accept when the entropy of the distribution (nats) is at most the threshold.</summary>
    Entropy,
    /// <summary>A user delegate decides.</summary>
    Custom,
}

/// <summary>
/// The acceptance rule of a cascade stage: which output to read, and when a row is answered at this stage
/// rather than sent on. Scores are read as probabilities; with <see cref="FromLogits"/>, softmax is applied first.
/// </summary>
public sealed class AcceptanceRule
{
    private readonly RowAcceptance? _custom;

    private AcceptanceRule(AcceptanceKind kind, double threshold, string? output, bool fromLogits, RowAcceptance? custom)
    {
        Kind = kind;
        Threshold = threshold;
        Output = output;
        FromLogits = fromLogits;
        _custom = custom;
    }

    /// <summary>The kind of rule.</summary>
    public AcceptanceKind Kind { get; }

    /// <summary>The threshold (unused for custom rules).</summary>
    public double Threshold { get; }

    /// <summary>The float output whose rows are judged; null for the model's first float output.</summary>
    public string? Output { get; }

    /// <summary>Whether the output holds logits (softmax is applied before judging).</summary>
    public bool FromLogits { get; }

    /// <summary>Accept rows whose top probability is at least <paramref name="threshold"/>.</summary>
    public static AcceptanceRule TopProbability(double threshold, string? output = null, bool fromLogits = false)
        => new(AcceptanceKind.TopProbability, CheckUnit(threshold), output, fromLogits, null);

    /// <summary>Accept rows whose top-two probability margin is at least <paramref name="threshold"/>.</summary>
    public static AcceptanceRule Margin(double threshold, string? output = null, bool fromLogits = false)
        => new(AcceptanceKind.Margin, CheckUnit(threshold), output, fromLogits, null);

    /// <summary>Accept rows whose entropy (natural log) is at most <paramref name="maxEntropy"/>.</summary>
    public static AcceptanceRule Entropy(double maxEntropy, string? output = null, bool fromLogits = false)
    {
        if (!(maxEntropy >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(maxEntropy), maxEntropy, "The entropy threshold must be zero or more.");
        }

        return new(AcceptanceKind.Entropy, maxEntropy, output, fromLogits, null);
    }

    /// <summary>Accept rows for which <paramref name="accept"/> returns true.</summary>
    public static AcceptanceRule Custom(RowAcceptance accept, string? output = null, bool fromLogits = false)
    {
        ArgumentNullException.ThrowIfNull(accept);
        return new(AcceptanceKind.Custom, double.NaN, output, fromLogits, accept);
    }

    /// <summary>
    /// A rule of <paramref name="kind"/> that accepts no row: its threshold lies beyond every confidence (what a calibration
    /// that lets no row stop early gives, since a threshold clamped to the kind's range still accepts the surest rows).
    /// </summary>
    internal static AcceptanceRule AcceptingNone(AcceptanceKind kind, string? output, bool fromLogits)
        => new(kind, kind == AcceptanceKind.Entropy ? double.NegativeInfinity : double.PositiveInfinity, output, fromLogits, null);

    /// <summary>Judges one row.</summary>
    public bool Accept(ReadOnlySpan<float> scores)
    {
        if (scores.IsEmpty)
        {
            return false;
        }

        if (!FromLogits)
        {
            return Judge(scores);
        }

        Span<float> probabilities = scores.Length <= 256 ? stackalloc float[scores.Length] : new float[scores.Length];
        Softmax(scores, probabilities);
        return Judge(probabilities);
    }

    private bool Judge(ReadOnlySpan<float> probabilities) => Kind == AcceptanceKind.Custom
        ? _custom!(probabilities)
        : Confidence(Kind, probabilities) >= ConfidenceThreshold(Kind, Threshold);

    /// <summary>
    /// A confidence score where larger means surer, comparable against <see cref="ConfidenceThreshold"/>:
    /// the top probability, the top-two margin, or the negated entropy.
    /// </summary>
    /// <remarks>
    /// NaN when a value is NaN (a numerically broken answer says nothing of the stage's confidence): no threshold is met,
    /// so every built-in rule sends such a row on. Without this, Margin and Entropy skip the NaN and read the rest as sure.
    /// </remarks>
    public static double Confidence(AcceptanceKind kind, ReadOnlySpan<float> probabilities)
    {
        if (kind != AcceptanceKind.Custom && HasNaN(probabilities))
        {
            return double.NaN;
        }

        switch (kind)
        {
            case AcceptanceKind.TopProbability:
            {
                float top = float.MinValue;
                foreach (var v in probabilities)
                {
                    top = Math.Max(top, v);
                }

                return top;
            }

            case AcceptanceKind.Margin:
            {
                float first = float.MinValue;
                float second = float.MinValue;
                foreach (var v in probabilities)
                {
                    if (v > first)
                    {
                        second = first;
                        first = v;
                    }
                    else if (v > second)
                    {
                        second = v;
                    }
                }

                return probabilities.Length < 2 ? first : first - second;
            }

            case AcceptanceKind.Entropy:
            {
                double h = 0;
                foreach (var v in probabilities)
                {
                    if (v > 0)
                    {
                        h -= v * Math.Log(v);
                    }
                }

                return -h;
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "Custom rules have no built-in confidence.");
        }
    }

    private static bool HasNaN(ReadOnlySpan<float> values)
    {
        foreach (var v in values)
        {
            if (float.IsNaN(v))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The confidence a row needs: the threshold, or its negation for entropy.</summary>
    public static double ConfidenceThreshold(AcceptanceKind kind, double threshold) => kind == AcceptanceKind.Entropy ? -threshold : threshold;

    /// <summary>Writes softmax(<paramref name="logits"/>) into <paramref name="destination"/>.</summary>
    public static void Softmax(ReadOnlySpan<float> logits, Span<float> destination)
    {
        float max = float.MinValue;
        foreach (var v in logits)
        {
            max = Math.Max(max, v);
        }

        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            double e = Math.Exp(logits[i] - max);
            destination[i] = (float)e;
            sum += e;
        }

        for (int i = 0; i < logits.Length; i++)
        {
            destination[i] = (float)(destination[i] / sum);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Kind == AcceptanceKind.Custom ? $"custom on {Output ?? "first output"}" : string.Create(CultureInfo.InvariantCulture, $"{Kind} {Threshold} on {Output ?? "first output"}");

    private static double CheckUnit(double threshold) => threshold is >= 0 and <= 1
        ? threshold
        : throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "The threshold must be between 0 and 1.");
}
