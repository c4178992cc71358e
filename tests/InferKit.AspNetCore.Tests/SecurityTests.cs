using System.Net;
using System.Threading.RateLimiting;
using InferKit.Samples.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.AspNetCore.Tests;

/// <summary>Authorization, rate limiting and the server's bounds on timeout and priority.</summary>
public sealed class SecurityTests
{
    private const string Infer = """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""";

    [Fact]
    public async Task RequireAuthorization_on_the_group_refuses_callers_without_a_valid_key_under_the_sample_scheme()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            group: g => g.RequireAuthorization(),
            configure: b =>
            {
                b.Services.AddAuthorization();
                b.Services.AddApiKeyAuthentication([new("alice", "secret-a")]);
            },
            middleware: app =>
            {
                app.UseAuthentication();
                app.UseAuthorization();
            });

        using (var anonymous = await host.PostJsonAsync("/v2/models/affine/infer", Infer))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.Contains("X-Api-Key", await KestrelHost.ErrorAsync(anonymous), StringComparison.Ordinal);
        }

        using (var wrongKey = await host.PostJsonAsync("/v2/models/affine/infer", Infer, r => r.Headers.Add(ApiKeyAuthentication.HeaderName, "secret-b")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, wrongKey.StatusCode);
        }

        using (var metadata = await host.Client.GetAsync("/v2/models/affine"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, metadata.StatusCode);
        }

        using (var withKey = await host.PostJsonAsync("/v2/models/affine/infer", Infer, r => r.Headers.Add(ApiKeyAuthentication.HeaderName, "secret-a")))
        {
            Assert.Equal(HttpStatusCode.OK, withKey.StatusCode);
        }

        // Probes stay anonymous by default.
        using var ready = await host.Client.GetAsync("/v2/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        using var live = await host.Client.GetAsync("/v2/health/live");
        Assert.Equal(HttpStatusCode.OK, live.StatusCode);
    }

    [Fact]
    public async Task Health_endpoints_can_be_protected_too()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            group: g => g.RequireAuthorization(),
            configure: b =>
            {
                b.Services.Configure<InferKitEndpointOptions>(o => o.ExemptHealthEndpoints = false);
                b.Services.AddAuthorization();
                b.Services.AddApiKeyAuthentication([new("alice", "secret-a")]);
            },
            middleware: app =>
            {
                app.UseAuthentication();
                app.UseAuthorization();
            });
        using var ready = await host.Client.GetAsync("/v2/health/ready");
        Assert.Equal(HttpStatusCode.Unauthorized, ready.StatusCode);
    }

    [Fact]
    public async Task RequireRateLimiting_on_the_group_refuses_past_the_limit()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            group: g => g.RequireRateLimiting("one"),
            configure: b => b.Services.AddRateLimiter(o =>
            {
                o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
                o.AddPolicy("one", _ => RateLimitPartition.GetFixedWindowLimiter("all", _ => new FixedWindowRateLimiterOptions
                {
                    PermitLimit = 1,
                    Window = TimeSpan.FromHours(1),
                    QueueLimit = 0,
                }));
            }),
            middleware: app => app.UseRateLimiter());

        using (var first = await host.PostJsonAsync("/v2/models/affine/infer", Infer))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        }

        using (var second = await host.PostJsonAsync("/v2/models/affine/infer", Infer))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
        }

        // Probes are exempt.
        using var ready = await host.Client.GetAsync("/v2/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
    }

    [Fact]
    public async Task Timeout_and_priority_come_from_headers_or_parameters_bounded_by_server_policy()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            configure: b => b.Services.Configure<InferKitEndpointOptions>(o =>
            {
                o.MaxTimeout = TimeSpan.FromSeconds(10);
                o.DefaultTimeout = TimeSpan.FromSeconds(2);
                o.MaxPriority = InferencePriority.High;
                o.DefaultPriority = InferencePriority.Low;
            }));

        async Task<InferenceRequest> SendAsync(string json, params (string Name, string Value)[] headers)
        {
            using var response = await host.PostJsonAsync("/v2/models/affine/infer", json, r =>
            {
                foreach (var (name, value) in headers)
                {
                    r.Headers.Add(name, value);
                }
            });
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return host.Recorder.Requests.Last().Request;
        }

        // Nothing asked: the server's defaults.
        var plain = await SendAsync(Infer);
        Assert.Equal(TimeSpan.FromSeconds(2), plain.Timeout);
        Assert.Equal(InferencePriority.Low, plain.Priority);

        // Headers.
        var fromHeaders = await SendAsync(Infer, (InferKitHeaders.TimeoutMs, "1500"), (InferKitHeaders.Priority, "high"));
        Assert.Equal(TimeSpan.FromMilliseconds(1500), fromHeaders.Timeout);
        Assert.Equal(InferencePriority.High, fromHeaders.Priority);

        // Above the bounds: cut to them.
        var tooMuch = await SendAsync(Infer, (InferKitHeaders.TimeoutMs, "600000"), (InferKitHeaders.Priority, "critical"));
        Assert.Equal(TimeSpan.FromSeconds(10), tooMuch.Timeout);
        Assert.Equal(InferencePriority.High, tooMuch.Priority);

        // Parameters (Triton's timeout is in microseconds).
        string withParameters = """{"parameters":{"timeout":750000,"priority":"normal"},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""";
        var fromParameters = await SendAsync(withParameters);
        Assert.Equal(TimeSpan.FromMilliseconds(750), fromParameters.Timeout);
        Assert.Equal(InferencePriority.Normal, fromParameters.Priority);

        // Triton's numbers (schedule-policy extension): 1 is the highest level (cut to the bound here), 3 normal, 0 the default.
        var tritonHighest = await SendAsync("""{"parameters":{"priority":1},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""");
        Assert.Equal(InferencePriority.High, tritonHighest.Priority);
        var tritonThird = await SendAsync("""{"parameters":{"priority":3},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""");
        Assert.Equal(InferencePriority.Normal, tritonThird.Priority);
        var tritonDefault = await SendAsync("""{"parameters":{"priority":0},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", (InferKitHeaders.Priority, "0"));
        Assert.Equal(InferencePriority.Low, tritonDefault.Priority);

        // Both: the stricter wins.
        var both = await SendAsync(withParameters, (InferKitHeaders.TimeoutMs, "300"), (InferKitHeaders.Priority, "low"));
        Assert.Equal(TimeSpan.FromMilliseconds(300), both.Timeout);
        Assert.Equal(InferencePriority.Low, both.Priority);

        // The largest timeout the protocol can carry (int64 microseconds, more than a TimeSpan holds): cut to the bound.
        var longest = await SendAsync("""{"parameters":{"timeout":9223372036854775807},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""");
        Assert.Equal(TimeSpan.FromSeconds(10), longest.Timeout);
    }

    [Theory]
    [InlineData(InferKitHeaders.TimeoutMs, "soon")]
    [InlineData(InferKitHeaders.TimeoutMs, "0")]
    [InlineData(InferKitHeaders.TimeoutMs, "-5")]
    [InlineData(InferKitHeaders.Priority, "urgent")]
    public async Task Malformed_scheduling_headers_are_400_naming_the_header(string header, string value)
    {
        await using var host = await KestrelHost.StartAsync(ik => ik.AddModel("affine", _ => new AffineBackend()));
        using var response = await host.PostJsonAsync("/v2/models/affine/infer", Infer, r => r.Headers.Add(header, value));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(header, await KestrelHost.ErrorAsync(response), StringComparison.Ordinal);
    }
}
