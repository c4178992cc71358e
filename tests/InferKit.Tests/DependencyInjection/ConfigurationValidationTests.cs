using InferKit.DependencyInjection;
using InferKit.Models;
using InferKit.Selection;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.Configuration;
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

    [Fact]
    public async Task A_drain_timeout_beyond_what_a_timer_accepts_is_refused_at_start()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddInferKit(o => o.DrainTimeout = TimeSpan.MaxValue).AddModel("m", _ => new FakeBackend());
        using var host = builder.Build();
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("DrainTimeout", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Calling_AddInferKit_twice_reports_each_invalid_setting_once()
    {
        var services = new ServiceCollection();
        services.AddInferKit(o => o.DrainTimeout = TimeSpan.FromSeconds(-1));
        services.AddInferKit().AddModel("m", _ => new FakeBackend());
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<InferKitOptions>>().Value);
        Assert.Equal(["InferKitOptions.DrainTimeout must be zero or positive (was -00:00:01)."], ex.Failures);
    }

    [Fact]
    public async Task An_alert_evaluation_interval_beyond_what_a_timer_accepts_is_refused_at_start()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddInferKit().AddModel("m", _ => new FakeBackend()).AddAlertRules(o =>
        {
            o.EvaluationInterval = TimeSpan.FromDays(60);
            o.Window = TimeSpan.FromDays(60);
            o.Rules.Add(AlertRule.QueueLengthAbove("queue", 10));
        });
        using var host = builder.Build();
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains($"AlertingOptions.EvaluationInterval must be at most {ModelOptionsValidator.MaxDuration}, the longest a timer waits (it is 60.00:00:00).",
            ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_health_back_off_too_long_for_a_clock_is_refused()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend(), o =>
        {
            o.Health.BackOff = TimeSpan.MaxValue;
            o.Health.MaxBackOff = TimeSpan.MaxValue;
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        Assert.Contains("Model 'm': Health.MaxBackOff must be at most", string.Join("\n", ex.Failures), StringComparison.Ordinal);
    }

    [Fact]
    public void A_delivery_margin_not_shorter_than_the_default_timeout_is_refused()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend(), o =>
        {
            o.Batching.DefaultTimeout = TimeSpan.FromMilliseconds(100);
            o.Batching.DeliveryMargin = TimeSpan.FromSeconds(1);
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        Assert.Contains("Model 'm': Batching.DefaultTimeout (00:00:00.1000000) must be longer than Batching.DeliveryMargin (00:00:01)", string.Join("\n", ex.Failures), StringComparison.Ordinal);
    }

    [Fact]
    public void Queue_delay_and_delivery_margin_longer_than_a_timer_accepts_are_refused()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend(), o =>
        {
            o.Batching.MaxQueueDelay = TimeSpan.MaxValue;
            o.Batching.DeliveryMargin = TimeSpan.MaxValue;
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var message = string.Join("\n", ex.Failures);
        Assert.Contains("Model 'm': Batching.MaxQueueDelay must be at most", message, StringComparison.Ordinal);
        Assert.Contains("Model 'm': Batching.DeliveryMargin must be at most", message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Long_but_representable_settings_still_work()
    {
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.DefaultTimeout = TimeSpan.FromDays(30);
            o.Batching.DeliveryMargin = TimeSpan.FromSeconds(1);
            o.Health.BackOff = TimeSpan.FromDays(1);
            o.Health.MaxBackOff = TimeSpan.FromDays(40);
        });
        using var r = await h.Client.InferAsync("m", FakeBackend.Request(1));
        Assert.True(r.IsSuccess, r.Message);
    }

    [Fact]
    public void A_virtual_model_name_that_a_real_model_could_not_take_is_refused()
    {
        var builder = new ServiceCollection().AddInferKit()
            .AddModel("a", _ => new FakeBackend())
            .AddModel("b", _ => new FakeBackend());
        var ex = Assert.Throws<ArgumentException>(() => builder.AddCascade("my cascade/v2", c => c.Then("a", AcceptanceRule.TopProbability(0.9)).Then("b")));
        Assert.Contains("Model name 'my cascade/v2' is not valid", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => builder.AddAdaptiveModel("x?", o => o.Variants.Add("a")));
    }

    [Theory]
    [InlineData(".")]
    [InlineData("..")]
    public void A_model_name_that_a_url_path_normalises_away_is_refused(string name)
    {
        var builder = new ServiceCollection().AddInferKit().AddModel("a", _ => new FakeBackend());
        var real = Assert.Throws<ArgumentException>(() => builder.AddModel(name, _ => new FakeBackend()));
        Assert.Contains($"Model name '{name}' is not valid", real.Message, StringComparison.Ordinal);
        Assert.Contains("path segments", real.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => builder.AddAdaptiveModel(name, o => o.Variants.Add("a")));

        // Dots inside a name stay valid.
        builder.AddModel("a..b", _ => new FakeBackend()).AddModel(".hidden", _ => new FakeBackend());
    }

    [Theory]
    [InlineData(".")]
    [InlineData("..")]
    public void A_version_that_a_url_path_normalises_away_is_refused(string version)
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend(), o => o.Version = version);
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        Assert.Contains("Version must be 1-64 letters, digits, '.', '_' or '-', and not '.' or '..'", string.Join("\n", ex.Failures), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_shared_thread_pool_larger_than_its_declared_range_is_refused_at_start()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddInferKit(o => o.OnnxThreadPool = new InferKit.Backends.Onnx.OnnxThreadPoolOptions { IntraOpThreads = 100_000 })
            .AddModel("m", _ => new FakeBackend());
        using var host = builder.Build();
        var ex = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());
        Assert.Contains("InferKitOptions.OnnxThreadPool.IntraOpThreads must be between 1 and 1024 when set (was 100000).", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Free_dimension_overrides_below_one_are_refused()
    {
        var services = new ServiceCollection();
        services.AddInferKit().AddOnnxModel("m", ModelSource.FromBytes(new InferKit.TestModels.MlpModel().ToOnnx()), o =>
        {
            o.Onnx.FreeDimensionOverrides["batch"] = 0;
            o.InstanceGroups.Add(new InstanceGroupOptions());
            o.InstanceGroups[0].Onnx.FreeDimensionOverrides["batch"] = -5;
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var message = string.Join("\n", ex.Failures);
        Assert.Contains("Model 'm': Onnx.FreeDimensionOverrides['batch'] must be at least 1 (was 0).", message, StringComparison.Ordinal);
        Assert.Contains("Model 'm': InstanceGroups[0].Onnx.FreeDimensionOverrides['batch'] must be at least 1 (was -5).", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validation_errors_write_their_numbers_in_the_invariant_culture()
    {
        // Swedish writes a negative number with U+2212 (a minus sign), not '-'.
        using var scope = new CultureScope("sv-SE");
        Assert.NotEqual("-5", (-5).ToString(System.Globalization.CultureInfo.CurrentCulture));
        var services = new ServiceCollection();
        services.AddInferKit().AddOnnxModel("m", ModelSource.FromBytes(new InferKit.TestModels.MlpModel().ToOnnx()), o =>
        {
            o.Onnx.FreeDimensionOverrides["batch"] = -5;
            o.Batching.PreferredBatchSizes.Add(-2);
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var message = string.Join("\n", ex.Failures);
        Assert.Contains("Model 'm': Onnx.FreeDimensionOverrides['batch'] must be at least 1 (was -5).", message, StringComparison.Ordinal);
        Assert.Contains("Model 'm': Batching.PreferredBatchSizes contains -2;", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Instance_groups_that_mix_configured_and_learned_weights_are_refused()
    {
        // A configured weight is a relative capacity (4 against 1); a learned one is the rows per second measured
        // (thousands): side by side, the group with a configured weight would look thousands of times slower.
        var services = new ServiceCollection();
        services.AddInferKit().AddOnnxModel("m", ModelSource.FromBytes(new InferKit.TestModels.MlpModel().ToOnnx()), o =>
        {
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 4 });
            o.InstanceGroups.Add(new InstanceGroupOptions());
        });
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        Assert.Contains("Model 'm': InstanceGroups[1].Weight is not set while InstanceGroups[0].Weight is (4)", string.Join("\n", ex.Failures), StringComparison.Ordinal);

        var valid = new ServiceCollection();
        valid.AddInferKit().AddOnnxModel("m", ModelSource.FromBytes(new InferKit.TestModels.MlpModel().ToOnnx()), o =>
        {
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 4 });
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 1 });
            o.InstanceGroups.Add(new InstanceGroupOptions { Weight = 1 });
        });
        using var validProvider = valid.BuildServiceProvider();
        Assert.NotNull(validProvider.GetRequiredService<IOptionsMonitor<ModelOptions>>().Get("m"));
    }

    [Fact]
    public void Undefined_onnx_enum_values_are_refused()
    {
        // A number in configuration ("Provider": "7") binds to an enum even when no member has that value.
        var config = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Onnx:Provider"] = "7",
                ["Onnx:GraphOptimization"] = "9",
                ["Onnx:ExecutionMode"] = "5",
            })
            .Build();
        var services = new ServiceCollection();
        services.AddInferKit().AddModel("m", _ => new FakeBackend(), o => config.Bind(o));
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IInferenceClient>());
        var message = string.Join("\n", ex.Failures);
        Assert.Contains("Model 'm': Onnx.Provider 7 is not one of Cpu, Cuda, TensorRT.", message, StringComparison.Ordinal);
        Assert.Contains("Model 'm': Onnx.GraphOptimization 9 is not one of", message, StringComparison.Ordinal);
        Assert.Contains("Model 'm': Onnx.ExecutionMode 5 is not one of Sequential, Parallel.", message, StringComparison.Ordinal);
    }
}
