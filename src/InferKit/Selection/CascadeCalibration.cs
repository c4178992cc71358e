namespace InferKit.Selection;

/// <summary>The outcome of calibrating a two-stage cascade on a labelled validation set.</summary>
/// <param name="Kind">The kind of acceptance rule calibrated.</param>
/// <param name="Threshold">The rule threshold found (probability, margin, or maximum entropy).</param>
/// <param name="EarlyShare">The share of rows the first stage answers at that threshold.</param>
/// <param name="Accuracy">The cascade's accuracy against the labels.</param>
/// <param name="FirstStageAccuracy">The first stage's accuracy alone.</param>
/// <param name="LastStageAccuracy">The last stage's accuracy alone.</param>
/// <param name="ExpectedCost">Expected cost per row: first-stage cost + (1 - share) × last-stage cost.</param>
/// <param name="CostRatio">Expected cost relative to running the last stage alone.</param>
/// <param name="Samples">Rows in the validation set.</param>
public sealed record CascadeCalibrationResult(
    AcceptanceKind Kind,
    double Threshold,
    double EarlyShare,
    double Accuracy,
    double FirstStageAccuracy,
    double LastStageAccuracy,
    double ExpectedCost,
    double CostRatio,
    int Samples)
{
    /// <summary>
    /// The acceptance rule at the calibrated threshold. It accepts exactly the rows counted in <see cref="EarlyShare"/>:
    /// with a share of 0 it accepts no row (not even one the first stage is certain of, at the clamped threshold).
    /// </summary>
    public AcceptanceRule ToRule(string? output = null, bool fromLogits = false)
    {
        if (Kind == AcceptanceKind.Custom)
        {
            throw new InvalidOperationException("Custom rules are not calibrated.");
        }

        if (EarlyShare <= 0)
        {
            return AcceptanceRule.AcceptingNone(Kind, output, fromLogits);
        }

        return Kind switch
        {
            AcceptanceKind.TopProbability => AcceptanceRule.TopProbability(Threshold, output, fromLogits),
            AcceptanceKind.Margin => AcceptanceRule.Margin(Threshold, output, fromLogits),
            _ => AcceptanceRule.Entropy(Threshold, output, fromLogits),
        };
    }
}

/// <summary>Finds the cascade threshold that lets the most rows stop at the first stage within an accuracy budget.</summary>
public static class CascadeCalibration
{
    /// <summary>
    /// Calibrates a two-stage cascade: among thresholds, the one that answers the most rows at the first stage
    /// while the cascade's accuracy stays within <paramref name="maxAccuracyLoss"/> of the last stage's.
    /// </summary>
    /// <param name="firstStageScores">The first stage's outputs, row-major [rows × classes] (probabilities, or logits with <paramref name="fromLogits"/>).</param>
    /// <param name="classes">Classes per row.</param>
    /// <param name="lastStagePredictions">The last stage's predicted class per row.</param>
    /// <param name="labels">The true class per row.</param>
    /// <param name="maxAccuracyLoss">The largest accuracy loss allowed against the last stage (0.01 = one point).</param>
    /// <param name="kind">The kind of rule to calibrate.</param>
    /// <param name="fromLogits">Apply softmax to the scores first.</param>
    /// <param name="firstStageCost">The first stage's cost per row (any unit).</param>
    /// <param name="lastStageCost">The last stage's cost per row (same unit).</param>
    /// <exception cref="ArgumentException">The arrays disagree in length, or the set is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="maxAccuracyLoss"/> is not between 0 and 1, <paramref name="firstStageCost"/> is negative or not finite,
    /// or <paramref name="lastStageCost"/> is not more than zero and finite.
    /// </exception>
    public static CascadeCalibrationResult Calibrate(
        ReadOnlySpan<float> firstStageScores,
        int classes,
        ReadOnlySpan<int> lastStagePredictions,
        ReadOnlySpan<int> labels,
        double maxAccuracyLoss,
        AcceptanceKind kind = AcceptanceKind.TopProbability,
        bool fromLogits = false,
        double firstStageCost = 1,
        double lastStageCost = 1)
    {
        if (kind == AcceptanceKind.Custom)
        {
            throw new ArgumentException("Custom rules cannot be calibrated; use TopProbability, Margin or Entropy.", nameof(kind));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        if (!(maxAccuracyLoss >= 0 && maxAccuracyLoss <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(maxAccuracyLoss), maxAccuracyLoss, "The accuracy loss allowed must be between 0 and 1 (0.01 = one point).");
        }

        if (!(firstStageCost >= 0 && double.IsFinite(firstStageCost)))
        {
            throw new ArgumentOutOfRangeException(nameof(firstStageCost), firstStageCost, "The first stage's cost must be zero or more, and finite.");
        }

        if (!(lastStageCost > 0 && double.IsFinite(lastStageCost)))
        {
            throw new ArgumentOutOfRangeException(nameof(lastStageCost), lastStageCost, "The last stage's cost must be more than zero, and finite (the cost ratio divides by it).");
        }

        int n = labels.Length;
        if (n == 0)
        {
            throw new ArgumentException("The validation set is empty.", nameof(labels));
        }

        if (lastStagePredictions.Length != n || firstStageScores.Length != n * classes)
        {
            throw new ArgumentException($"Expected {n} last-stage predictions and {n}×{classes} first-stage scores; got {lastStagePredictions.Length} and {firstStageScores.Length}.");
        }

        var confidence = new double[n];
        var firstCorrect = new bool[n];
        var probabilities = new float[classes];
        int firstRight = 0;
        int lastRight = 0;
        for (int i = 0; i < n; i++)
        {
            var row = firstStageScores.Slice(i * classes, classes);
            if (fromLogits)
            {
                AcceptanceRule.Softmax(row, probabilities);
                row = probabilities;
            }

            confidence[i] = AcceptanceRule.Confidence(kind, row);
            int argmax = 0;
            for (int c = 1; c < classes; c++)
            {
                if (row[c] > row[argmax])
                {
                    argmax = c;
                }
            }

            firstCorrect[i] = argmax == labels[i];
            firstRight += firstCorrect[i] ? 1 : 0;
            lastRight += lastStagePredictions[i] == labels[i] ? 1 : 0;
        }

        // A row with a NaN score is never accepted by a rule (its confidence is NaN): it sorts last (NaN is the least
        // double) and only the `accepting` rows before it can stop early.
        var order = Enumerable.Range(0, n).OrderByDescending(i => confidence[i]).ToArray();
        int accepting = 0;
        while (accepting < n && !double.IsNaN(confidence[order[accepting]]))
        {
            accepting++;
        }

        var lastCorrectSorted = new bool[n];
        for (int k = 0; k < n; k++)
        {
            lastCorrectSorted[k] = lastStagePredictions[order[k]] == labels[order[k]];
        }

        // Accept the k most confident rows: accuracy = first-stage hits among them + last-stage hits among the rest.
        double lastAccuracy = lastRight / (double)n;
        double floor = lastAccuracy - maxAccuracyLoss - 1e-12;
        int bestK = 0;
        int right = lastRight;
        double bestAccuracy = lastAccuracy;
        for (int k = 1; k <= accepting; k++)
        {
            int i = order[k - 1];
            right += (firstCorrect[i] ? 1 : 0) - (lastCorrectSorted[k - 1] ? 1 : 0);
            bool cut = k == accepting || confidence[order[k]] < confidence[i];
            double accuracy = right / (double)n;
            if (cut && accuracy >= floor)
            {
                bestK = k;
                bestAccuracy = accuracy;
            }
        }

        double threshold = bestK == 0 ? (accepting == 0 ? 1 : Math.BitIncrement(confidence[order[0]])) : confidence[order[bestK - 1]];
        threshold = kind == AcceptanceKind.Entropy ? Math.Max(0, -threshold) : Math.Clamp(threshold, 0, 1);
        double share = bestK / (double)n;
        double cost = firstStageCost + ((1 - share) * lastStageCost);
        return new CascadeCalibrationResult(kind, threshold, share, bestAccuracy, firstRight / (double)n, lastAccuracy, cost, cost / lastStageCost, n);
    }
}
