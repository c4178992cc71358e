using System.ComponentModel.DataAnnotations;

namespace InferKit.Selection;

/// <summary>One stage of a cascade: a registered model and the rule that decides which of its rows are final.</summary>
/// <param name="Model">The registered (real) model that runs this stage.</param>
/// <param name="Acceptance">The acceptance rule; required for every stage but the last, ignored on the last.</param>
/// <param name="RelativeCost">The stage's cost relative to the others (for reports); 1 by default.</param>
public sealed record CascadeStage(string Model, AcceptanceRule? Acceptance = null, double RelativeCost = 1);

/// <summary>A cascade: a virtual model over an ordered list of real models with the same inputs.</summary>
public sealed class CascadeOptions
{
    /// <summary>The stages, cheapest first; every stage but the last has an acceptance rule.</summary>
    public IList<CascadeStage> Stages { get; } = new List<CascadeStage>();

    /// <summary>Adds a stage.</summary>
    public CascadeOptions Then(string model, AcceptanceRule? acceptance = null, double relativeCost = 1)
    {
        Stages.Add(new CascadeStage(model, acceptance, relativeCost));
        return this;
    }
}

/// <summary>
/// An adaptive model: a virtual model over variants ranked by accuracy. Each request goes to the most accurate
/// variant whose predicted latency (queue ahead × learned batch latency) meets its deadline; under overload it steps
/// down to faster variants rather than refuse, and steps back up when load falls.
/// </summary>
public sealed class AdaptiveModelOptions
{
    /// <summary>The registered models to choose among, most accurate (and slowest) first.</summary>
    public IList<string> Variants { get; } = new List<string>();

    /// <summary>The latency budget of requests that carry no timeout or deadline.</summary>
    public TimeSpan DefaultBudget { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The share of the remaining time a variant's predicted latency may use (headroom for noise).</summary>
    [Range(0.05, 1.0)]
    public double Headroom { get; set; } = 0.8;

    /// <summary>Send <see cref="InferencePriority.Critical"/> requests straight to the fastest variant.</summary>
    public bool CriticalUsesFastest { get; set; } = true;
}
