using InferKit.Selection;

namespace InferKit.Tests.Selection;

public sealed class AcceptanceRuleTests
{
    public static TheoryData<string, float[]> NaNRows() => new()
    {
        { "top", [float.NaN, 0.2f] },
        { "top", [0.9f, float.NaN] },
        { "top", [float.NaN, float.NaN] },
        { "margin", [float.NaN, 0.2f] },
        { "margin", [0.9f, float.NaN] },
        { "margin", [float.NaN, float.NaN] },
        { "entropy", [float.NaN, 0.2f] },
        { "entropy", [1f, float.NaN] },
        { "entropy", [float.NaN, float.NaN] },
    };

    private static AcceptanceRule Rule(string kind, bool fromLogits = false) => kind switch
    {
        "top" => AcceptanceRule.TopProbability(0.5, fromLogits: fromLogits),
        "margin" => AcceptanceRule.Margin(0.5, fromLogits: fromLogits),
        _ => AcceptanceRule.Entropy(0.5, fromLogits: fromLogits),
    };

    /// <summary>
    /// A row with a NaN score (a numerically broken first-stage answer) says nothing of the stage's confidence: every
    /// built-in rule sends it on to the next stage rather than accept it, whatever the kind of rule.
    /// </summary>
    [Theory]
    [MemberData(nameof(NaNRows))]
    public void A_row_with_a_NaN_score_is_not_accepted(string kind, float[] row)
    {
        Assert.False(Rule(kind).Accept(row));
        Assert.False(Rule(kind, fromLogits: true).Accept(row));
        Assert.True(double.IsNaN(AcceptanceRule.Confidence(Rule(kind).Kind, row)));
    }

    [Theory]
    [InlineData("top")]
    [InlineData("margin")]
    [InlineData("entropy")]
    public void A_sure_row_without_NaN_is_still_accepted(string kind)
    {
        Assert.True(Rule(kind).Accept([0.99f, 0.01f]));
        Assert.True(Rule(kind, fromLogits: true).Accept([10f, -10f]));
    }
}
