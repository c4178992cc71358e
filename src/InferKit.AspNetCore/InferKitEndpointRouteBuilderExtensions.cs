using InferKit;
using InferKit.AspNetCore;
using InferKit.Models;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps InferKit's Open Inference Protocol endpoints.</summary>
public static class InferKitEndpointRouteBuilderExtensions
{
    /// <summary>The prefixes mapped on each route builder (route matching ignores case, so these do too).</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<IEndpointRouteBuilder, HashSet<string>> MappedPrefixes = new();

    /// <summary>
    /// Maps the Open Inference Protocol (KServe v2, as Triton serves it) under <paramref name="prefix"/>:
    /// <list type="bullet">
    /// <item><c>GET /v2</c>: server metadata.</item>
    /// <item><c>GET /v2/health/live</c> and <c>GET /v2/health/ready</c>: liveness, and readiness (every required model loaded and warmed).</item>
    /// <item><c>GET /v2/models/{model}[/versions/{version}]</c>: model metadata (503 until the model has loaded); <c>.../ready</c>: model readiness (a cascade or adaptive model is ready when every member is).</item>
    /// <item><c>POST /v2/models/{model}[/versions/{version}]/infer</c>: inference, with JSON tensors and the binary tensor data extension.</item>
    /// </list>
    /// Errors come back as <c>{"error": "..."}</c>: 400 for invalid requests, 404 for unknown models or versions,
    /// 413 over <see cref="InferKitEndpointOptions.MaxRequestBytes"/>, 415 for a body with a <c>Content-Encoding</c> (such as gzip;
    /// <c>UseRequestDecompression()</c> before the endpoints accepts those) or a <c>charset</c> other than UTF-8, 429 (queue full) or 503 with <c>Retry-After</c> when
    /// the scheduler refuses or the host is stopping, and 504 when the request's deadline passes.
    /// </summary>
    /// <param name="endpoints">The application or another route builder.</param>
    /// <param name="prefix">A path prefix for every endpoint, for example <c>"/inference"</c>; empty by default.</param>
    /// <returns>The group of endpoints, to add conventions such as <c>RequireAuthorization()</c> or <c>RequireRateLimiting(...)</c>.</returns>
    /// <exception cref="InvalidOperationException"><c>services.AddInferKit()</c> was not called, or the options are invalid.</exception>
    public static RouteGroupBuilder MapInferKit(this IEndpointRouteBuilder endpoints, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(prefix);
        var services = endpoints.ServiceProvider;
        var client = services.GetService<IInferenceClient>();
        var registry = services.GetService<IModelRegistry>();
        if (client is null || registry is null)
        {
            throw new InvalidOperationException("MapInferKit needs InferKit's services: call builder.Services.AddInferKit() and add models before mapping the endpoints.");
        }

        var options = services.GetService<IOptions<InferKitEndpointOptions>>()?.Value ?? new InferKitEndpointOptions();
        options.Validate();

        // A second mapping under the same prefix would make every one of these routes ambiguous: each request to them
        // would fail with a 500 (AmbiguousMatchException) instead of the mistake showing here.
        string normalized = "/" + prefix.Trim().Trim('/');
        var mapped = MappedPrefixes.GetValue(endpoints, static _ => new HashSet<string>(StringComparer.OrdinalIgnoreCase));
        lock (mapped)
        {
            if (!mapped.Add(normalized))
            {
                throw new InvalidOperationException(
                    $"MapInferKit has already mapped the InferKit endpoints under the prefix '{prefix}' on this route builder; mapping them again makes every request to them ambiguous. Map them once, or under another prefix.");
            }
        }

        var logger = services.GetService<ILoggerFactory>()?.CreateLogger("InferKit.AspNetCore") ?? NullLogger.Instance;
        var handler = new InferKitHttpHandler(client, registry, options, services.GetService<IHostApplicationLifetime>(), logger);

        var group = endpoints.MapGroup(prefix);
        group.MapGet("/v2", (RequestDelegate)handler.ServerMetadataAsync);
        var live = group.MapGet("/v2/health/live", (RequestDelegate)InferKitHttpHandler.LiveAsync);
        var ready = group.MapGet("/v2/health/ready", (RequestDelegate)handler.ReadyAsync);
        if (options.ExemptHealthEndpoints)
        {
            live.AllowAnonymous().DisableRateLimiting();
            ready.AllowAnonymous().DisableRateLimiting();
        }

        group.MapGet("/v2/models/{model}", (RequestDelegate)handler.ModelMetadataAsync);
        group.MapGet("/v2/models/{model}/versions/{version}", (RequestDelegate)handler.ModelMetadataAsync);
        group.MapGet("/v2/models/{model}/ready", (RequestDelegate)handler.ModelReadyAsync);
        group.MapGet("/v2/models/{model}/versions/{version}/ready", (RequestDelegate)handler.ModelReadyAsync);
        group.MapPost("/v2/models/{model}/infer", (RequestDelegate)handler.InferAsync);
        group.MapPost("/v2/models/{model}/versions/{version}/infer", (RequestDelegate)handler.InferAsync);
        return group;
    }
}
