using InferKit.Models;
using InferKit.Selection;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace InferKit.Tests.DependencyInjection;

public sealed class ConfigurationValidationTests
{
    [Fact]
    public void A_real_model_named_like_an_existing_cascade_is_refused_at_registration()
    {
        var builder = new ServiceCollection().AddInferKit()
            .AddModel("a", _ => new FakeBackend())
            .AddModel("b", _ => new FakeBackend())
            .AddCascade("x", c => c.Then("a", AcceptanceRule.TopProbability(0.9)).Then("b"));
        var ex = Assert.Throws<InvalidOperationException>(() => builder.AddModel("x", _ => new FakeBackend()));
        Assert.Contains("'x'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_adaptive_model_with_a_NaN_headroom_is_refused()
    {
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddModel("a", _ => new FakeBackend())
            .AddAdaptiveModel("x", o =>
            {
                o.Variants.Add("a");
                o.Headroom = double.NaN;
            });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        Assert.Contains("adaptive model 'x': Headroom must be between 0.05 and 1 (was NaN)", string.Join("\n", ex.Failures), StringComparison.Ordinal);
    }
}
