using InferKit.Backends;
using InferKit.Scheduling;
using InferKit.Tensors;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>An explicit padded output axis that the model's shapes cannot have is refused at load, naming what fits.</summary>
public sealed class PaddingPlanTests
{
    private static readonly ModelSignature Tokens = new(
        [new TensorSpec("ids", TensorElementType.Int64, [-1, -1])],
        [new TensorSpec("hidden", TensorElementType.Float32, [-1, -1, 8])]);

    [Fact]
    public void An_output_axis_out_of_range_is_refused_naming_the_ranges_in_the_invariant_culture()
    {
        using var culture = new CultureScope("sv-SE"); // writes negative numbers with U+2212 MINUS SIGN
        var options = new PaddingOptions { Enabled = true };
        options.OutputAxes["hidden"] = new PaddedAxis(-5, "ids", 1);
        var ex = Assert.Throws<InvalidOperationException>(() => PaddingPlan.Create("m", Tokens, options));
        Assert.Contains("OutputAxes['hidden'] = (OutputAxis -5, Input 'ids', InputAxis 1)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("the output axis from 1 to 2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_output_axis_in_range_is_accepted()
    {
        var options = new PaddingOptions { Enabled = true };
        options.OutputAxes["hidden"] = new PaddedAxis(1, "ids", 1);
        var plan = PaddingPlan.Create("m", Tokens, options);
        Assert.Equal([(1, 0, 1)], plan.OutputTrims[0]); // output axis 1 is cut back to input 0's axis 1
    }
}
