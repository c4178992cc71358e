using System.Globalization;
using InferKit.Models;
using Microsoft.Extensions.Options;

namespace InferKit.DependencyInjection;

/// <summary>Validates the process-wide options and reports all errors at once, each naming the setting, its value and the range expected.</summary>
internal sealed class InferKitOptionsValidator : IValidateOptions<InferKitOptions>
{
    public ValidateOptionsResult Validate(string? name, InferKitOptions options)
    {
        var errors = new List<string>();
        void Check(bool ok, FormattableString message)
        {
            if (!ok)
            {
                errors.Add(message.ToString(CultureInfo.InvariantCulture));
            }
        }

        Check(options.DrainTimeout >= TimeSpan.Zero, $"InferKitOptions.DrainTimeout must be zero or positive (was {options.DrainTimeout}).");
        Check(options.DrainTimeout <= ModelOptionsValidator.MaxDuration,
            $"InferKitOptions.DrainTimeout must be at most {ModelOptionsValidator.MaxDuration}, the longest a timer waits (was {options.DrainTimeout}).");
        if (options.OnnxThreadPool is { } pool)
        {
            Check(pool.IntraOpThreads is null or (>= 1 and <= 1024),
                $"InferKitOptions.OnnxThreadPool.IntraOpThreads must be between 1 and 1024 when set (was {pool.IntraOpThreads}).");
            Check(pool.InterOpThreads is null or (>= 1 and <= 1024),
                $"InferKitOptions.OnnxThreadPool.InterOpThreads must be between 1 and 1024 when set (was {pool.InterOpThreads}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
