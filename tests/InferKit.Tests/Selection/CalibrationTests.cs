using InferKit.Selection;

namespace InferKit.Tests.Selection;

public sealed class CalibrationTests
{
    // Ten rows, first-stage top probability falling from 0.99 to 0.40 (two classes). The first stage is right on the
    // six most confident rows and wrong on the rest; the last stage is always right. Label is class 0 everywhere.
    private static readonly float[] Top = [0.99f, 0.95f, 0.90f, 0.80f, 0.70f, 0.60f, 0.55f, 0.52f, 0.51f, 0.505f];

    private static (float[] Scores, int[] Last, int[] Labels) Set()
    {
        var scores = new float[Top.Length * 2];
        for (int i = 0; i < Top.Length; i++)
        {
            bool right = i < 6;
            scores[(i * 2) + (right ? 0 : 1)] = Top[i];
            scores[(i * 2) + (right ? 1 : 0)] = 1 - Top[i];
        }

        return (scores, new int[Top.Length], new int[Top.Length]);
    }

    [Fact]
    public void With_no_loss_allowed_the_threshold_stops_exactly_where_the_first_stage_starts_to_err()
    {
        var (scores, last, labels) = Set();
        var result = CascadeCalibration.Calibrate(scores, 2, last, labels, maxAccuracyLoss: 0);
        Assert.Equal(0.60, result.Threshold, 1e-6);
        Assert.Equal(0.6, result.EarlyShare, 1e-9);
        Assert.Equal(1.0, result.Accuracy, 1e-9);
        Assert.Equal(0.6, result.FirstStageAccuracy, 1e-9);
        Assert.Equal(1.0, result.LastStageAccuracy, 1e-9);
        Assert.Equal(1 + 0.4, result.ExpectedCost, 1e-9);
    }

    [Fact]
    public void A_loss_budget_of_ten_points_lets_one_more_row_stop_early()
    {
        var (scores, last, labels) = Set();
        var result = CascadeCalibration.Calibrate(scores, 2, last, labels, maxAccuracyLoss: 0.1, firstStageCost: 0.1, lastStageCost: 1);
        Assert.Equal(0.55, result.Threshold, 1e-6);
        Assert.Equal(0.7, result.EarlyShare, 1e-9);
        Assert.Equal(0.9, result.Accuracy, 1e-9);
        Assert.Equal(0.4 / 1.0, result.CostRatio, 1e-9);

        // The rule it gives accepts exactly the rows it counted.
        var rule = result.ToRule();
        int accepted = 0;
        for (int i = 0; i < Top.Length; i++)
        {
            accepted += rule.Accept(scores.AsSpan(i * 2, 2)) ? 1 : 0;
        }

        Assert.Equal(7, accepted);
    }

    [Fact]
    public void Entropy_and_margin_rules_calibrate_on_the_same_ordering()
    {
        var (scores, last, labels) = Set();
        var margin = CascadeCalibration.Calibrate(scores, 2, last, labels, 0, AcceptanceKind.Margin);
        Assert.Equal(0.2, margin.Threshold, 1e-5);
        Assert.Equal(0.6, margin.EarlyShare, 1e-9);
        var entropy = CascadeCalibration.Calibrate(scores, 2, last, labels, 0, AcceptanceKind.Entropy);
        Assert.Equal(0.6, entropy.EarlyShare, 1e-9);
        Assert.True(entropy.ToRule().Accept([0.6f, 0.4f]));
        Assert.False(entropy.ToRule().Accept([0.55f, 0.45f]));
    }

    [Fact]
    public void Mismatched_inputs_are_refused_with_what_was_expected()
    {
        var ex = Assert.Throws<ArgumentException>(() => CascadeCalibration.Calibrate(new float[6], 2, new int[2], new int[2], 0));
        Assert.Contains("Expected 2 last-stage predictions and 2×2 first-stage scores; got 2 and 6", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// When no share of rows can stop early within the budget (here the first stage's surest row, at probability 1, is
    /// wrong), the rule calibrated must accept no row, as <see cref="CascadeCalibrationResult.EarlyShare"/> says: a
    /// threshold clamped to 1 would still accept every row the first stage is certain of.
    /// </summary>
    [Theory]
    [InlineData(AcceptanceKind.TopProbability)]
    [InlineData(AcceptanceKind.Margin)]
    [InlineData(AcceptanceKind.Entropy)]
    public void When_no_row_may_stop_early_the_rule_accepts_none(AcceptanceKind kind)
    {
        // Row 0: certain (1, 0) and wrong (label 1); row 1: (0.6, 0.4) and right (label 0). The last stage is always right.
        float[] scores = [1f, 0f, 0.6f, 0.4f];
        int[] labels = [1, 0];
        var result = CascadeCalibration.Calibrate(scores, 2, labels, labels, maxAccuracyLoss: 0, kind);
        Assert.Equal(0, result.EarlyShare);
        Assert.Equal(1.0, result.Accuracy, 1e-9);
        var rule = result.ToRule();
        Assert.False(rule.Accept(scores.AsSpan(0, 2)));
        Assert.False(rule.Accept(scores.AsSpan(2, 2)));
    }

    /// <summary>
    /// Rows whose first-stage scores hold a NaN are never accepted by a rule (see AcceptanceRuleTests): calibration counts
    /// them as going on, its threshold can stop just above them, and the rule it gives accepts exactly the rows it counted.
    /// </summary>
    [Fact]
    public void Rows_with_NaN_scores_count_as_going_on_and_the_rule_accepts_exactly_the_rows_counted()
    {
        var (scores, last, labels) = Set();
        scores[^2] = float.NaN; // the least sure row (which the first stage gets wrong) is broken
        var result = CascadeCalibration.Calibrate(scores, 2, last, labels, maxAccuracyLoss: 0.5);
        Assert.Equal(0.9, result.EarlyShare, 1e-9);
        Assert.Equal(0.51, result.Threshold, 1e-6);
        var rule = result.ToRule();
        int accepted = 0;
        for (int i = 0; i < Top.Length; i++)
        {
            accepted += rule.Accept(scores.AsSpan(i * 2, 2)) ? 1 : 0;
        }

        Assert.Equal(9, accepted);
    }

    [Theory]
    [InlineData(0, 0, 0.01, "lastStageCost")]
    [InlineData(1, -1, 0.01, "lastStageCost")]
    [InlineData(-1, 1, 0.01, "firstStageCost")]
    [InlineData(double.NaN, 1, 0.01, "firstStageCost")]
    [InlineData(1, double.PositiveInfinity, 0.01, "lastStageCost")]
    [InlineData(1, 1, double.NaN, "maxAccuracyLoss")]
    [InlineData(1, 1, -0.1, "maxAccuracyLoss")]
    [InlineData(1, 1, 1.5, "maxAccuracyLoss")]
    public void Costs_and_the_loss_budget_outside_their_range_are_refused_by_name(double first, double last, double loss, string name)
    {
        var (scores, lastPredictions, labels) = Set();
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CascadeCalibration.Calibrate(scores, 2, lastPredictions, labels, loss, firstStageCost: first, lastStageCost: last));
        Assert.Equal(name, ex.ParamName);
    }
}
