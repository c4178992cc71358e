using System.ComponentModel.DataAnnotations;
using System.Globalization;
using InferKit.Backends.Onnx;
using InferKit.LoadBalancing;
using Microsoft.Extensions.Options;

namespace InferKit.Models;

/// <summary>Validates every part of a model's options and reports all errors at once, each naming the model and the setting.</summary>
internal sealed class ModelOptionsValidator(IEnumerable<ILoadBalancingStrategy> strategies) : IValidateOptions<ModelOptions>
{
    /// <summary>The longest duration a setting may take: what a timer accepts (about 49.7 days).</summary>
    internal static readonly TimeSpan MaxDuration = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    private readonly string[] _strategyNames = strategies.Select(static s => s.Name).Distinct(StringComparer.OrdinalIgnoreCase).ToArray();

    public ValidateOptionsResult Validate(string? name, ModelOptions options)
    {
        var errors = Collect(name ?? string.Empty, options, _strategyNames);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    internal static List<string> Collect(string model, ModelOptions options, IReadOnlyCollection<string> strategies)
    {
        var errors = new List<string>();
        void Annotations(object target, string path)
        {
            var results = new List<ValidationResult>();
            Validator.TryValidateObject(target, new ValidationContext(target), results, validateAllProperties: true);
            foreach (var r in results)
            {
                var member = r.MemberNames.FirstOrDefault();
                var value = member is null ? null : target.GetType().GetProperty(member)?.GetValue(target);
                errors.Add(string.Create(CultureInfo.InvariantCulture, $"Model '{model}': {path}{member}: {r.ErrorMessage} (was {value ?? "null"})."));
            }
        }

        // Numbers in the messages are written in the invariant culture (a negative number in sv-SE starts with U+2212).
        void Check(bool ok, FormattableString message)
        {
            if (!ok)
            {
                errors.Add($"Model '{model}': {message.ToString(CultureInfo.InvariantCulture)}");
            }
        }

        Annotations(options, string.Empty);
        Annotations(options.Onnx, "Onnx.");
        Annotations(options.Batching, "Batching.");
        Annotations(options.Batching.Adaptive, "Batching.Adaptive.");
        Annotations(options.Batching.Padding, "Batching.Padding.");
        Annotations(options.Health, "Health.");
        for (int i = 0; i < options.InstanceGroups.Count; i++)
        {
            Annotations(options.InstanceGroups[i], $"InstanceGroups[{i}].");
            Annotations(options.InstanceGroups[i].Onnx, $"InstanceGroups[{i}].Onnx.");
        }

        int weighted = -1;
        for (int i = 0; i < options.InstanceGroups.Count && weighted < 0; i++)
        {
            weighted = options.InstanceGroups[i].Weight is null ? -1 : i;
        }

        for (int i = 0; weighted >= 0 && i < options.InstanceGroups.Count; i++)
        {
            // A configured weight is a relative capacity, a learned one the rows per second measured: side by side, they
            // are on scales thousands apart, and a weighted strategy would all but ignore the group with a configured one.
            Check(options.InstanceGroups[i].Weight is not null,
                $"InstanceGroups[{i}].Weight is not set while InstanceGroups[{weighted}].Weight is ({options.InstanceGroups[weighted].Weight}): a configured weight is a relative capacity and a learned one rows per second, so set Weight on every group or on none.");
        }

        Check(options.Source is not null || options.BackendFactory is not null, $"no model source: use AddOnnxModel with a file, bytes or stream, or AddModel with a backend factory.");
        var sessions = options.InstanceGroups.Select(static (g, i) => ($"InstanceGroups[{i}].Onnx.", g.Onnx)).Prepend(("Onnx.", options.Onnx));
        foreach (var (prefix, onnx) in sessions)
        {
            Check(onnx.SpinDuration is null || onnx.SpinDuration > TimeSpan.Zero,
                $"{prefix}SpinDuration must be positive when set (was {onnx.SpinDuration}); set {prefix}AllowSpinning = false to stop spinning.");
            Check(Enum.IsDefined(onnx.Provider), $"{prefix}Provider {onnx.Provider} is not one of {string.Join(", ", Enum.GetNames<ExecutionProvider>())}.");
            Check(Enum.IsDefined(onnx.GraphOptimization), $"{prefix}GraphOptimization {onnx.GraphOptimization} is not one of {string.Join(", ", Enum.GetNames<GraphOptimization>())}.");
            Check(Enum.IsDefined(onnx.ExecutionMode), $"{prefix}ExecutionMode {onnx.ExecutionMode} is not one of {string.Join(", ", Enum.GetNames<GraphExecutionMode>())}.");
            foreach (var kv in onnx.FreeDimensionOverrides)
            {
                Check(kv.Value >= 1, $"{prefix}FreeDimensionOverrides['{kv.Key}'] must be at least 1 (was {kv.Value}).");
            }
        }

        var b = options.Batching;
        Check(b.MaxQueueDelay >= TimeSpan.Zero, $"Batching.MaxQueueDelay must be zero or positive (was {b.MaxQueueDelay}).");
        Check(b.DeliveryMargin >= TimeSpan.Zero, $"Batching.DeliveryMargin must be zero or positive (was {b.DeliveryMargin}).");
        Check(b.MaxQueueDelay <= MaxDuration, $"Batching.MaxQueueDelay must be at most {MaxDuration} (was {b.MaxQueueDelay}).");
        Check(b.DeliveryMargin <= MaxDuration, $"Batching.DeliveryMargin must be at most {MaxDuration} (was {b.DeliveryMargin}).");
        Check(b.DefaultTimeout is null || b.DefaultTimeout > TimeSpan.Zero, $"Batching.DefaultTimeout must be positive when set (was {b.DefaultTimeout}).");
        Check(b.DefaultTimeout is not { } dt || dt <= TimeSpan.Zero || dt > b.DeliveryMargin,
            $"Batching.DefaultTimeout ({b.DefaultTimeout}) must be longer than Batching.DeliveryMargin ({b.DeliveryMargin}); otherwise every request that relies on it is discarded as too late.");
        foreach (var p in b.PreferredBatchSizes)
        {
            Check(p >= 1 && p <= b.MaxBatchSize, $"Batching.PreferredBatchSizes contains {p}; each must be between 1 and MaxBatchSize ({b.MaxBatchSize}).");
        }

        Check(!b.Adaptive.Enabled || b.Adaptive.LatencyTarget > TimeSpan.Zero, $"Batching.Adaptive.LatencyTarget must be positive (was {b.Adaptive.LatencyTarget}).");
        Check(options.Health.BackOff > TimeSpan.Zero, $"Health.BackOff must be positive (was {options.Health.BackOff}).");
        Check(options.Health.MaxBackOff <= MaxDuration, $"Health.MaxBackOff must be at most {MaxDuration} (was {options.Health.MaxBackOff}).");
        Check(options.Health.MaxBackOff >= options.Health.BackOff, $"Health.MaxBackOff ({options.Health.MaxBackOff}) must be at least Health.BackOff ({options.Health.BackOff}).");
        Check(options.Health.RunTimeout is null || options.Health.RunTimeout > TimeSpan.Zero, $"Health.RunTimeout must be positive when set (was {options.Health.RunTimeout}).");
        if (!string.IsNullOrEmpty(options.LoadBalancing))
        {
            Check(strategies.Contains(options.LoadBalancing, StringComparer.OrdinalIgnoreCase),
                $"unknown load-balancing strategy '{options.LoadBalancing}'. Known strategies: {string.Join(", ", strategies)}.");
        }

        return errors;
    }
}
