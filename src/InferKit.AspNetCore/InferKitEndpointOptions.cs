namespace InferKit.AspNetCore;

/// <summary>
/// Server policy for the Open Inference Protocol endpoints that <c>MapInferKit</c> maps. Configure it with
/// <c>services.Configure&lt;InferKitEndpointOptions&gt;(...)</c>; it is read once, when the endpoints are mapped.
/// </summary>
public sealed class InferKitEndpointOptions
{
    /// <summary>The default <see cref="MaxRequestBytes"/>: 64 MiB.</summary>
    public const long DefaultMaxRequestBytes = 64L * 1024 * 1024;

    /// <summary>
    /// The largest request body accepted, JSON and binary data together; larger ones are answered with 413.
    /// Defaults to 64 MiB. It replaces Kestrel's own request body limit on the inference endpoints.
    /// </summary>
    public long MaxRequestBytes { get; set; } = DefaultMaxRequestBytes;

    /// <summary>The timeout of a request that names none (in a header or the <c>timeout</c> parameter); null leaves the model's own default.</summary>
    public TimeSpan? DefaultTimeout { get; set; }

    /// <summary>The longest timeout a caller may ask for; longer ones (and <see cref="DefaultTimeout"/>) are cut to it. Null for no bound.</summary>
    public TimeSpan? MaxTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The priority of a request that names none.</summary>
    public InferencePriority DefaultPriority { get; set; } = InferencePriority.Normal;

    /// <summary>
    /// The highest priority a caller may ask for; higher ones are lowered to it. Defaults to
    /// <see cref="InferencePriority.High"/>, so that remote callers cannot claim <see cref="InferencePriority.Critical"/>
    /// unless the server allows it.
    /// </summary>
    public InferencePriority MaxPriority { get; set; } = InferencePriority.High;

    /// <summary>
    /// When true (the default), <c>/v2/health/live</c> and <c>/v2/health/ready</c> allow anonymous callers and skip
    /// rate limiting even when the group requires them, so orchestrator probes keep working.
    /// </summary>
    public bool ExemptHealthEndpoints { get; set; } = true;

    /// <summary>The <c>Retry-After</c> sent with a refusal that carries no hint of its own, and while the host is stopping.</summary>
    public TimeSpan DefaultRetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The server name reported by <c>GET /v2</c>.</summary>
    public string ServerName { get; set; } = "inferkit";

    /// <summary>Throws when a value is out of range, naming every problem at once.</summary>
    internal void Validate()
    {
        var errors = new List<string>();
        if (MaxRequestBytes <= 0 || MaxRequestBytes > Array.MaxLength)
        {
            errors.Add($"MaxRequestBytes must be between 1 and {Array.MaxLength}; it is {MaxRequestBytes}.");
        }

        if (DefaultTimeout is { } t && t <= TimeSpan.Zero)
        {
            errors.Add($"DefaultTimeout must be positive or null; it is {t}.");
        }

        if (MaxTimeout is { } m && m <= TimeSpan.Zero)
        {
            errors.Add($"MaxTimeout must be positive or null; it is {m}.");
        }

        if (!Enum.IsDefined(DefaultPriority))
        {
            errors.Add($"DefaultPriority {DefaultPriority} is not an InferencePriority.");
        }

        if (!Enum.IsDefined(MaxPriority))
        {
            errors.Add($"MaxPriority {MaxPriority} is not an InferencePriority.");
        }

        if (DefaultRetryAfter < TimeSpan.Zero)
        {
            errors.Add($"DefaultRetryAfter must not be negative; it is {DefaultRetryAfter}.");
        }

        if (string.IsNullOrWhiteSpace(ServerName))
        {
            errors.Add("ServerName must not be empty.");
        }

        if (errors.Count > 0)
        {
            throw new InvalidOperationException("InferKitEndpointOptions are invalid: " + string.Join(" ", errors));
        }
    }
}

/// <summary>The HTTP header names the InferKit endpoints read and write.</summary>
public static class InferKitHeaders
{
    /// <summary>The request timeout in milliseconds (a positive integer), bounded by <see cref="InferKitEndpointOptions.MaxTimeout"/>.</summary>
    public const string TimeoutMs = "InferKit-Timeout-Ms";

    /// <summary>
    /// The request priority: low, normal, high or critical, or a number as Triton's schedule-policy extension reads it (0 the
    /// default, 1 the highest, 2 high, 3 normal, 4 or more low); bounded by <see cref="InferKitEndpointOptions.MaxPriority"/>.
    /// </summary>
    public const string Priority = "InferKit-Priority";

    /// <summary>The length of the JSON part of a body that carries binary tensor data after it (binary tensor data extension).</summary>
    public const string InferenceHeaderContentLength = "Inference-Header-Content-Length";
}
