using System.Globalization;
using System.Threading.RateLimiting;
using InferKit.AspNetCore;
using InferKit.Models;
using InferKit.Scheduling;
using InferKit.Telemetry;
using InferKit.TestModels;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using OpenTelemetry.Metrics;

namespace InferKit.Samples.Server;

/// <summary>
/// Builds the sample server. Configuration (appsettings.json, environment, or command line such as
/// <c>--Sample:Models=fraud</c>):
/// <list type="bullet">
/// <item><c>Sample:Models</c>: which of fraud, resnet18, minilm to serve (comma-separated, or a JSON array; all three by default).</item>
/// <item><c>Sample:ModelsPath</c>: where fraud.onnx is generated on first start (default: <c>models</c> under the content root).</item>
/// <item><c>Sample:ApiKeys:&lt;client&gt;=&lt;key&gt;</c>: when any is set, the <c>/v2</c> endpoints other than the health probes require an <c>X-Api-Key</c> header (<c>/healthz</c>, <c>/metrics</c> and <c>/</c> stay open).</item>
/// <item><c>Sample:RateLimit:Permits</c> per <c>Sample:RateLimit:Period</c>: requests per client (API key, else IP address); 1000 a second by default, 0 switches it off; the period is from 1 ms to about 49.7 days.</item>
/// </list>
/// </summary>
public static class SampleServer
{
    /// <summary>The URL served when none is configured (<c>--urls</c>, <c>ASPNETCORE_URLS</c>, ...).</summary>
    public const string DefaultUrl = "http://localhost:5000";

    /// <summary>The name of the per-client rate-limiting policy.</summary>
    public const string RateLimitPolicy = "per-client";

    /// <summary>The shortest <c>Sample:RateLimit:Period</c>: the token bucket's timer counts whole milliseconds.</summary>
    private static readonly TimeSpan MinRateLimitPeriod = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest <c>Sample:RateLimit:Period</c>: the longest period a <see cref="Timer"/> takes (4294967294 ms).</summary>
    private static readonly TimeSpan MaxRateLimitPeriod = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    /// <summary>Builds the application from command-line arguments.</summary>
    /// <param name="args">Command-line arguments, for example <c>--urls http://0.0.0.0:8080</c>.</param>
    /// <param name="configure">A last say over the builder (tests use it).</param>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        if (string.IsNullOrEmpty(builder.Configuration["urls"]) && string.IsNullOrEmpty(builder.Configuration["http_ports"]))
        {
            builder.WebHost.UseUrls(DefaultUrl);
        }

        var models = ReadModels(builder.Configuration.GetSection("Sample:Models"));
        string modelsPath = builder.Configuration["Sample:ModelsPath"] ?? Path.Combine(builder.Environment.ContentRootPath, "models");
        var apiKeys = ReadApiKeys(builder.Configuration.GetSection("Sample:ApiKeys"));
        int permits = builder.Configuration.GetValue("Sample:RateLimit:Permits", 1000);
        var period = builder.Configuration.GetValue("Sample:RateLimit:Period", TimeSpan.FromSeconds(1));

        // Checked here: a token bucket refuses a period of zero only when its first request arrives, which would then be a 500.
        if (permits < 0)
        {
            throw new InvalidOperationException($"Sample:RateLimit:Permits must be 0 (no rate limit) or more; it is {permits}.");
        }

        // The token bucket replenishes on a timer, whose period is whole milliseconds up to 4294967294 (about 49.7 days):
        // a period outside that range is refused here, at start, with the setting's name.
        if (permits > 0 && (period < MinRateLimitPeriod || period > MaxRateLimitPeriod))
        {
            throw new InvalidOperationException(
                $"Sample:RateLimit:Period must be from {MinRateLimitPeriod} to {MaxRateLimitPeriod} (about 49.7 days, the longest period a timer takes); it is {period}.");
        }

        var inferKit = builder.Services.AddInferKit(o => o.DrainTimeout = TimeSpan.FromSeconds(20));
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(25));
        foreach (var model in models)
        {
            switch (model)
            {
                case "fraud":
                    // Generated on first start, then reused. Many HTTP callers arrive at once: let their requests queue
                    // and join batches rather than run alone on the caller's thread whenever the instance is idle.
                    inferKit.AddOnnxModel("fraud", FraudModel.EnsureFile(modelsPath), o =>
                    {
                        o.Batching.MaxBatchSize = 64;
                        o.Batching.AllowInlineExecution = false;
                    });
                    break;
                case "resnet18":
                    // Its batch dimension is fixed at 1: one request per run.
                    inferKit.AddOnnxModel("resnet18", RealModels.ResNet18Path, o => o.Batching.Enabled = false);
                    break;
                case "minilm":
                    // Sentences of different lengths share a batch: inputs are padded, and the hidden states cut back.
                    inferKit.AddOnnxModel("minilm", ModelSource.FromEmbeddedResource(RealModels.MiniLmAssembly, RealModels.MiniLmResourceName), o =>
                    {
                        o.Batching.MaxBatchSize = 16;
                        o.Batching.AllowInlineExecution = false;
                        o.Batching.Padding.Enabled = true;
                        o.Batching.Padding.OutputAxes[RealModels.MiniLmLastHiddenState] = new PaddedAxis(1, RealModels.MiniLmInputIds, 1);
                    });
                    break;
                default:
                    throw new InvalidOperationException($"Sample:Models names '{model}'; the sample serves fraud, resnet18 and minilm.");
            }
        }

        // Metrics of the "InferKit" meter, scraped by Prometheus at /metrics.
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics.AddMeter(InferKitTelemetry.Name).AddPrometheusExporter());
        builder.Services.AddHealthChecks().AddInferKitReadinessCheck().AddInferKitHealthChecks();
        builder.Services.AddAuthorization();
        builder.Services.AddApiKeyAuthentication(apiKeys);
        if (permits > 0)
        {
            builder.Services.AddRateLimiter(o => ConfigureRateLimiter(o, permits, period));
        }

        configure?.Invoke(builder);
        var app = builder.Build();

        // Rate limiting after authentication (a client's bucket is its API key's) but before authorization, so that
        // requests with a wrong key spend their address's tokens too: otherwise keys could be guessed at full speed.
        app.UseAuthentication();
        if (permits > 0)
        {
            app.UseRateLimiter();
        }

        app.UseAuthorization();

        var group = app.MapInferKit();
        if (apiKeys.Count > 0)
        {
            group.RequireAuthorization();
        }

        if (permits > 0)
        {
            group.RequireRateLimiting(RateLimitPolicy);
        }

        app.MapHealthChecks("/healthz", new HealthCheckOptions { ResponseWriter = WriteHealthAsync });
        app.MapPrometheusScrapingEndpoint(); // GET /metrics, outside the group: no API key or rate limit
        app.MapGet("/", () => Results.Text(Usage(models), "text/plain"));

        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("InferKit.Samples.Server");
            if (!logger.IsEnabled(LogLevel.Information))
            {
                return;
            }

            logger.LogInformation(
                "InferKit sample serving {Models} on {Urls}. API keys: {Auth}. Rate limit: {Limit}.",
                string.Join(", ", models),
                string.Join(", ", app.Urls),
                apiKeys.Count == 0 ? "off (set Sample:ApiKeys:<client>=<key> to require X-Api-Key)" : $"required ({apiKeys.Count} clients)",
                permits > 0 ? $"{permits} per {period} per client" : "off");
        });
        return app;
    }

    /// <summary>
    /// Reads <c>Sample:Models</c>: a comma-separated list (<c>"fraud,minilm"</c>) or, in JSON, an array
    /// (<c>["fraud", "minilm"]</c>, which configuration holds as <c>Sample:Models:0</c>, <c>:1</c>, ...). Unset means all three.
    /// </summary>
    private static string[] ReadModels(IConfigurationSection section)
    {
        var items = section.GetChildren().Select(static c => c.Value ?? string.Empty).ToList();
        if (items.Count > 0 && !string.IsNullOrEmpty(section.Value))
        {
            // Two configuration sources disagree (say, the string in appsettings.json and an array in
            // appsettings.Development.json); configuration keeps both and cannot say which came last.
            throw new InvalidOperationException(
                $"{section.Path} is set both as a list (\"{section.Value}\") and as an array ({string.Join(", ", items)}) in different configuration sources; use one form.");
        }

        if (!string.IsNullOrEmpty(section.Value))
        {
            items.Add(section.Value);
        }
        else if (items.Count == 0 && section.Value is null)
        {
            items.Add("fraud,resnet18,minilm");
        }

        var models = items.SelectMany(static i => i.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();
        if (models.Length == 0)
        {
            throw new InvalidOperationException($"{section.Path} is empty; name one or more of fraud, resnet18 and minilm, or leave it unset for all three.");
        }

        // A model named twice is a mistake (a copy-paste, or one meant to be another), not a wish to serve it twice. Names
        // compare as the registry compares them (ordinal); one in another case is refused below as a model the sample lacks.
        var named = new HashSet<string>(StringComparer.Ordinal);
        foreach (var model in models)
        {
            if (!named.Add(model))
            {
                throw new InvalidOperationException($"{section.Path} names '{model}' more than once ({string.Join(", ", models)}); name each model once.");
            }
        }

        return models;
    }

    /// <summary>
    /// Reads <c>Sample:ApiKeys:&lt;client&gt;=&lt;key&gt;</c>. A setting that cannot be used as a key stops the server: skipping
    /// it would leave the endpoints open (or a client locked out) with no sign of why.
    /// </summary>
    private static List<KeyValuePair<string, string>> ReadApiKeys(IConfigurationSection section)
    {
        var errors = new List<string>();
        var keys = new List<KeyValuePair<string, string>>();
        if (!string.IsNullOrEmpty(section.Value))
        {
            errors.Add($"{section.Path} is a single value; give each client its key as {section.Path}:<client>=<key>.");
        }

        var clientsByKey = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var child in section.GetChildren())
        {
            string? key = child.Value;
            if (string.IsNullOrEmpty(key))
            {
                errors.Add(child.GetChildren().Any()
                    ? $"{child.Path} is a section; it must be the client's key."
                    : $"{child.Path} is empty; remove it or give the client a key.");
            }
            else if (key.Trim().Length != key.Length || key.Any(char.IsControl))
            {
                // HTTP trims a header value and has no control characters: such a key could never be presented.
                errors.Add($"{child.Path} starts or ends with white space or holds a control character; no X-Api-Key header can carry it.");
            }
            else if (!clientsByKey.TryAdd(key, child.Key))
            {
                errors.Add($"{child.Path} has the same key as {section.Path}:{clientsByKey[key]}; each client needs its own.");
            }
            else
            {
                keys.Add(new KeyValuePair<string, string>(child.Key, key));
            }
        }

        if (errors.Count > 0)
        {
            throw new InvalidOperationException("The API keys are invalid: " + string.Join(" ", errors));
        }

        return keys;
    }

    private static void ConfigureRateLimiter(RateLimiterOptions options, int permits, TimeSpan period)
    {
        options.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
        options.OnRejected = static async (context, cancellationToken) =>
        {
            if (context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var retryAfter))
            {
                context.HttpContext.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(retryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            }

            context.HttpContext.Response.ContentType = "application/json";
            await context.HttpContext.Response.WriteAsync("""{"error":"Rate limit exceeded for this client; retry later."}""", cancellationToken).ConfigureAwait(false);
        };

        // One token bucket per client: the API-key client name when authenticated, else the remote address.
        options.AddPolicy(RateLimitPolicy, http => RateLimitPartition.GetTokenBucketLimiter(
            http.User.Identity?.IsAuthenticated == true ? "client:" + http.User.Identity.Name : "ip:" + http.Connection.RemoteIpAddress,
            _ => new TokenBucketRateLimiterOptions
            {
                TokenLimit = permits,
                TokensPerPeriod = permits,
                ReplenishmentPeriod = period,
                QueueLimit = 0,
                AutoReplenishment = true,
            }));
    }

    /// <summary>
    /// Writes <c>/healthz</c> as <c>{"status": ..., "models": {"&lt;model&gt;": {"state": ..., "status": ...}}}</c>: the
    /// overall status (200 when Healthy or Degraded, 503 when Unhealthy) and each model's state and health. The endpoint
    /// is open (no API key), so the checks' descriptions and load errors, which may name files, are left out.
    /// </summary>
    private static async Task WriteHealthAsync(HttpContext context, HealthReport report)
    {
        using var buffer = new MemoryStream();
        using (var writer = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("status", report.Status.ToString());
            writer.WriteStartObject("models");
            if (report.Entries.TryGetValue(InferKitModelHealthCheckExtensions.DefaultName, out var models))
            {
                foreach (var (model, value) in models.Data)
                {
                    if (value is IReadOnlyDictionary<string, object> health)
                    {
                        writer.WriteStartObject(model);
                        writer.WriteString("state", health.TryGetValue("state", out var state) ? state.ToString() : null);
                        writer.WriteString("status", health.TryGetValue("status", out var status) ? status.ToString() : null);
                        writer.WriteEndObject();
                    }
                }
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        context.Response.ContentType = "application/json";
        context.Response.ContentLength = buffer.Length;
        await context.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), context.RequestAborted).ConfigureAwait(false);
    }

    private static string Usage(IEnumerable<string> models) => $"""
        InferKit sample server (Open Inference Protocol / KServe v2).
        Models: {string.Join(", ", models)}
          GET  /v2                              server metadata
          GET  /v2/health/live | /v2/health/ready
          GET  /v2/models/{"{model}"}                  model metadata
          POST /v2/models/{"{model}"}/infer            inference (JSON or binary tensor data)
          GET  /healthz                         ASP.NET Core health checks (readiness + per-model health)
          GET  /metrics                         Prometheus metrics (inferkit_*)
        """;
}
