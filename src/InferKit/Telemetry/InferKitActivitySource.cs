using System.Diagnostics;
using System.Reflection;

namespace InferKit.Telemetry;

/// <summary>The process-wide ActivitySource "InferKit" (its version is the assembly's informational version).</summary>
internal static class InferKitActivitySource
{
    public static readonly ActivitySource Source = new(InferKitTelemetry.Name, VersionOf(typeof(InferKitActivitySource).Assembly));

    private static string VersionOf(Assembly assembly)
    {
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (!string.IsNullOrEmpty(informational))
        {
            int plus = informational.IndexOf('+', StringComparison.Ordinal);
            return plus > 0 ? informational[..plus] : informational;
        }

        return assembly.GetName().Version?.ToString() ?? "0.0.0";
    }
}
