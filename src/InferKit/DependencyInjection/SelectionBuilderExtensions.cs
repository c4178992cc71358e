using System.Globalization;
using InferKit.Models;
using InferKit.Selection;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds virtual models: cascades and adaptive models over registered models.</summary>
public static class SelectionBuilderExtensions
{
    /// <summary>
    /// Adds a cascade: a model name served by running each request on the first stage and sending only the rows
    /// its acceptance rule rejects on to the next stage.
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The cascade's name, called like any model.</param>
    /// <param name="configure">Adds the stages, cheapest first: <c>c.Then("small", AcceptanceRule.TopProbability(0.9)).Then("large")</c>.</param>
    public static IInferKitBuilder AddCascade(this IInferKitBuilder builder, string name, Action<CascadeOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var options = new CascadeOptions();
        configure(options);
        return AddVirtual(builder, name, "cascade", () => Named(options.Stages.Select(static s => s?.Model)), () => Validate(name, options),
            (registry, time, metrics) => new CascadeModel(name, options, registry, time, metrics));
    }

    /// <summary>
    /// Adds an adaptive model: a model name served by the most accurate variant that meets each request's deadline,
    /// stepping down to faster variants under load.
    /// </summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The adaptive model's name, called like any model.</param>
    /// <param name="configure">Lists the variants, most accurate first, and the latency budget.</param>
    public static IInferKitBuilder AddAdaptiveModel(this IInferKitBuilder builder, string name, Action<AdaptiveModelOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var options = new AdaptiveModelOptions();
        configure(options);
        return AddVirtual(builder, name, "adaptive", () => Named(options.Variants), () => Validate(name, options),
            (registry, time, metrics) => new AdaptiveModel(name, options, registry, time, metrics));
    }

    private static List<string> Validate(string name, CascadeOptions options)
    {
        var errors = new List<string>();
        if (options.Stages.Count < 2)
        {
            errors.Add($"cascade '{name}': needs at least two stages (has {options.Stages.Count}).");
        }

        for (int i = 0; i < options.Stages.Count; i++)
        {
            var stage = options.Stages[i];
            if (stage is null)
            {
                errors.Add($"cascade '{name}': stage {i + 1} is null.");
                continue;
            }

            if (string.IsNullOrWhiteSpace(stage.Model))
            {
                errors.Add($"cascade '{name}': stage {i + 1} has no model name; each stage names a registered model.");
            }

            if (i < options.Stages.Count - 1 && stage.Acceptance is null)
            {
                errors.Add($"cascade '{name}': stage {i + 1} ('{options.Stages[i].Model}') has no acceptance rule; every stage but the last needs one.");
            }
        }

        return errors;
    }

    private static List<string> Validate(string name, AdaptiveModelOptions options)
    {
        var errors = new List<string>();
        if (options.Variants.Count < 1)
        {
            errors.Add($"adaptive model '{name}': needs at least one variant.");
        }

        for (int i = 0; i < options.Variants.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(options.Variants[i]))
            {
                errors.Add($"adaptive model '{name}': variant {i + 1} has no model name; each variant names a registered model.");
            }
        }

        if (options.DefaultBudget <= TimeSpan.Zero)
        {
            errors.Add($"adaptive model '{name}': DefaultBudget must be positive (was {options.DefaultBudget}).");
        }

        if (!(options.Headroom >= 0.05 && options.Headroom <= 1.0))
        {
            errors.Add(string.Create(CultureInfo.InvariantCulture, $"adaptive model '{name}': Headroom must be between 0.05 and 1 (was {options.Headroom})."));
        }

        return errors;
    }

    /// <summary>The members that have a name (one without is a validation error of its own, not an unknown model).</summary>
    private static string[] Named(IEnumerable<string?> members) => members.Where(static m => !string.IsNullOrWhiteSpace(m)).Select(static m => m!).ToArray();

    private static IInferKitBuilder AddVirtual(IInferKitBuilder builder, string name, string kind, Func<IReadOnlyList<string>> members, Func<IReadOnlyList<string>> validate,
        Func<ModelRegistry, TimeProvider, SelectionMetrics, IVirtualModel> create)
    {
        var registrations = InferKitBuilderExtensions.CheckNewName(builder, name);
        registrations.Virtuals.Add(new VirtualRegistration(name, kind, members, validate, create));
        return builder;
    }
}
