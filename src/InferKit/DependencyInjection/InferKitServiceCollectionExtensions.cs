using InferKit;
using InferKit.Backends;
using InferKit.DependencyInjection;
using InferKit.LoadBalancing;
using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.Metrics;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Configures InferKit in a service collection.</summary>
public interface IInferKitBuilder
{
    /// <summary>The services being configured.</summary>
    IServiceCollection Services { get; }
}

/// <summary>Registers InferKit: the model registry, the in-process client, the strategies and the hosted service.</summary>
public static class InferKitServiceCollectionExtensions
{
    /// <summary>
    /// Adds InferKit. Call once; further calls return a builder over the same registration. Models are added on the
    /// returned builder (<see cref="InferKitBuilderExtensions.AddOnnxModel(IInferKitBuilder, string, ModelSource, Action{ModelOptions}?)"/>).
    /// </summary>
    public static IInferKitBuilder AddInferKit(this IServiceCollection services, Action<InferKitOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var optionsBuilder = services.AddOptions<InferKitOptions>();
        if (configure is not null)
        {
            optionsBuilder.Configure(configure);
        }

        var existing = services.FirstOrDefault(static d => d.ServiceType == typeof(ModelRegistrations))?.ImplementationInstance as ModelRegistrations;
        if (existing is null)
        {
            // Once: a second AddInferKit must not add the same validations again (each error would be reported twice).
            optionsBuilder.ValidateOnStart();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<InferKitOptions>, InferKitOptionsValidator>());
            existing = new ModelRegistrations();
            services.AddSingleton(existing);
            services.TryAddSingleton(TimeProvider.System);
            services.AddLogging(); // idempotent; a later AddLogging(...) by the host still configures providers
            services.AddMetrics();
            InferKitTelemetryServices.Add(services);
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, RoundRobinStrategy>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, LeastConnectionsStrategy>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, WeightedLeastConnectionsStrategy>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, PowerOfTwoChoicesStrategy>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, PeakEwmaStrategy>());
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ModelOptions>, ModelOptionsValidator>());
            services.TryAddSingleton<ModelRegistry>();
            services.TryAddSingleton<IModelRegistry>(static sp => sp.GetRequiredService<ModelRegistry>());
            services.TryAddSingleton<IInferenceClient>(static sp => sp.GetRequiredService<ModelRegistry>());
            services.AddHostedService<InferKitHostedService>();
        }

        return new InferKitBuilder(services);
    }

    private sealed class InferKitBuilder(IServiceCollection services) : IInferKitBuilder
    {
        public IServiceCollection Services { get; } = services;
    }
}

/// <summary>Adds models to InferKit.</summary>
public static class InferKitBuilderExtensions
{
    /// <summary>Adds an ONNX model from a file, bytes or stream.</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The model name (letters, digits, '.', '_', '-').</param>
    /// <param name="source">Where the model comes from.</param>
    /// <param name="configure">Configures instances, batching, balancing and ONNX Runtime settings.</param>
    public static IInferKitBuilder AddOnnxModel(this IInferKitBuilder builder, string name, ModelSource source, Action<ModelOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return AddModelCore(builder, name, o =>
        {
            o.Source = source;
            configure?.Invoke(o);
        });
    }

    /// <summary>Adds an ONNX model from a file.</summary>
    /// <inheritdoc cref="AddOnnxModel(IInferKitBuilder, string, ModelSource, Action{ModelOptions}?)"/>
    public static IInferKitBuilder AddOnnxModel(this IInferKitBuilder builder, string name, string path, Action<ModelOptions>? configure = null)
        => AddOnnxModel(builder, name, ModelSource.FromFile(path), configure);

    /// <summary>Adds a model served by a custom <see cref="IModelBackend"/> (another runtime, or a fake in tests).</summary>
    /// <param name="builder">The builder.</param>
    /// <param name="name">The model name.</param>
    /// <param name="factory">Creates one instance; called once per instance at load.</param>
    /// <param name="configure">Configures instances, batching and balancing.</param>
    public static IInferKitBuilder AddModel(this IInferKitBuilder builder, string name, Func<ModelInstanceContext, IModelBackend> factory, Action<ModelOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(factory);
        return AddModelCore(builder, name, o =>
        {
            o.BackendFactory = factory;
            configure?.Invoke(o);
        });
    }

    /// <summary>Adds a load-balancing strategy that models can choose by its name.</summary>
    public static IInferKitBuilder AddLoadBalancingStrategy<TStrategy>(this IInferKitBuilder builder)
        where TStrategy : class, ILoadBalancingStrategy
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingStrategy, TStrategy>());
        return builder;
    }

    private static IInferKitBuilder AddModelCore(IInferKitBuilder builder, string name, Action<ModelOptions> configure)
    {
        var registrations = CheckNewName(builder, name);
        registrations.Names.Add(name);
        builder.Services.AddOptions<ModelOptions>(name).Configure(configure).ValidateOnStart();
        return builder;
    }

    /// <summary>
    /// The checks every model name (real or virtual) passes when it is registered: valid, and not taken by a real or a
    /// virtual model. Returns the registrations to add it to.
    /// </summary>
    internal static ModelRegistrations CheckNewName(IInferKitBuilder builder, string name)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (!IsValidName(name))
        {
            throw new ArgumentException($"Model name '{name}' is not valid: use 1-128 letters, digits, '.', '_' or '-'.", nameof(name));
        }

        if (name is "." or "..")
        {
            // A URL path normalises these segments away: /v2/models/../ready would never reach the model.
            throw new ArgumentException($"Model name '{name}' is not valid: '.' and '..' are path segments that no /v2/models/{{name}} URL can name; use another name.", nameof(name));
        }

        var registrations = (ModelRegistrations)builder.Services.First(static d => d.ServiceType == typeof(ModelRegistrations)).ImplementationInstance!;
        if (registrations.Names.Contains(name, StringComparer.Ordinal) || registrations.Virtuals.Any(v => v.Name == name))
        {
            throw new InvalidOperationException($"A model named '{name}' is already registered.");
        }

        return registrations;
    }

    private static bool IsValidName(string name)
    {
        if (name.Length > 128)
        {
            return false;
        }

        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }

        return true;
    }
}
