using System.Net;
using System.Text;
using System.Text.Json;
using InferKit.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>Refusals, deadlines and draining: each answered with its status, and nothing accepted is lost.</summary>
public sealed class RefusalTests
{
    private static string Request(string id, float value, string extra = "") =>
        $$"""{"id":"{{id}}",{{extra}}"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[{{value.ToString(System.Globalization.CultureInfo.InvariantCulture)}}]}]}""";

    private static Task<KestrelHost> StartBlockingAsync(BlockingBackend backend, int maxQueueLength = 100, Action<Microsoft.AspNetCore.Builder.WebApplicationBuilder>? configure = null) =>
        KestrelHost.StartAsync(
            ik => ik.AddModel("block", _ => backend, o =>
            {
                o.WarmupRuns = 0;
                o.Batching.MaxBatchSize = 1;
                o.Batching.MaxQueueLength = maxQueueLength;
            }),
            configure: configure);

    private static async Task AssertEchoAsync(HttpResponseMessage response, string id, float value)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = await KestrelHost.JsonAsync(response);
        Assert.Equal(id, doc.RootElement.GetProperty("id").GetString());
        Assert.Equal(value, doc.RootElement.GetProperty("outputs")[0].GetProperty("data")[0].GetSingle());
    }

    [Fact]
    public async Task A_full_queue_is_429_with_retry_after_and_the_queued_requests_still_complete()
    {
        var backend = new BlockingBackend();
        await using var host = await StartBlockingAsync(backend, maxQueueLength: 1);
        using var release = new GateOpener(backend.Release); // disposed before the host, whose shutdown waits for the held run

        // One request runs (and blocks); then several arrive together for a queue of one.
        var running = host.PostJsonAsync("/v2/models/block/infer", Request("run", 1));
        Assert.True(await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30)), "the run never started");
        var burst = Enumerable.Range(0, 4).Select(i => host.PostJsonAsync("/v2/models/block/infer", Request($"b{i}", 10 + i))).ToArray();
        var refusedOrDone = await Task.WhenAny(burst);
        var refused = await refusedOrDone;

        // The queue holds one request; the instance holds one; so a burst of four meets a full queue at once.
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.True(refused.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        Assert.Contains("QueueFull", await KestrelHost.ErrorAsync(refused), StringComparison.Ordinal);

        backend.Release();
        await AssertEchoAsync(await running, "run", 1);
        int ok = 0;
        int tooMany = 0;
        for (int i = 0; i < burst.Length; i++)
        {
            using var response = await burst[i];
            if (response.StatusCode == HttpStatusCode.OK)
            {
                await AssertEchoAsync(response, $"b{i}", 10 + i);
                ok++;
            }
            else
            {
                Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
                tooMany++;
            }
        }

        Assert.True(tooMany >= 1, "At least one request of the burst must meet the full queue.");
        Assert.True(ok >= 1, "The queued request must complete once the instance is free.");

        // And the server keeps serving.
        await AssertEchoAsync(await host.PostJsonAsync("/v2/models/block/infer", Request("after", 5)), "after", 5);
    }

    [Fact]
    public async Task A_request_whose_deadline_passes_in_the_queue_is_504()
    {
        var backend = new BlockingBackend();
        await using var host = await StartBlockingAsync(backend);
        using var release = new GateOpener(backend.Release); // disposed before the host, whose shutdown waits for the held run
        var running = host.PostJsonAsync("/v2/models/block/infer", Request("run", 1));
        Assert.True(await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30)), "the run never started");

        // Queued behind the blocked run with a 1 ms timeout: the scheduler's deadline timer answers it.
        using var late = await host.PostJsonAsync("/v2/models/block/infer", Request("late", 2), r => r.Headers.Add(InferKitHeaders.TimeoutMs, "1"));
        Assert.Equal(HttpStatusCode.GatewayTimeout, late.StatusCode);
        Assert.Contains("deadline", await KestrelHost.ErrorAsync(late), StringComparison.Ordinal);

        backend.Release();
        await AssertEchoAsync(await running, "run", 1);
    }

    [Fact]
    public async Task While_draining_new_requests_are_503_with_retry_after_and_every_accepted_one_completes()
    {
        var backend = new BlockingBackend();
        await using var host = await StartBlockingAsync(backend);
        using var release = new GateOpener(backend.Release); // disposed before the host, whose shutdown waits for the held run
        var running = host.PostJsonAsync("/v2/models/block/infer", Request("running", 1));
        Assert.True(await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30)), "the run never started");
        var queued = host.PostJsonAsync("/v2/models/block/infer", Request("queued", 2));
        await host.Recorder.Admitted("queued");

        var drain = host.Registry.DrainAsync(TimeSpan.FromMinutes(1));
        using (var refused = await host.PostJsonAsync("/v2/models/block/infer", Request("new", 3)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.NotNull(refused.Headers.RetryAfter);
            Assert.Contains("ShuttingDown", await KestrelHost.ErrorAsync(refused), StringComparison.Ordinal);
        }

        Assert.False(drain.IsCompleted);
        backend.Release();
        await AssertEchoAsync(await running, "running", 1);
        await AssertEchoAsync(await queued, "queued", 2);
        Assert.True(await drain);
    }

    [Fact]
    public async Task Stopping_the_host_finishes_the_accepted_requests_before_it_stops()
    {
        var backend = new BlockingBackend();
        var host = await StartBlockingAsync(backend);
        try
        {
            var running = host.PostJsonAsync("/v2/models/block/infer", Request("running", 1));
            Assert.True(await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30)), "the run never started");
            var queued = host.PostJsonAsync("/v2/models/block/infer", Request("queued", 2));
            await host.Recorder.Admitted("queued");

            var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var lifetime = host.App.Services.GetRequiredService<IHostApplicationLifetime>();
            using var registration = lifetime.ApplicationStopping.Register(() => stopping.TrySetResult());
            var stop = host.App.StopAsync();
            await stopping.Task.WaitAsync(TimeSpan.FromSeconds(30));

            backend.Release();
            await AssertEchoAsync(await running, "running", 1);
            await AssertEchoAsync(await queued, "queued", 2);
            await stop;
        }
        finally
        {
            backend.Release(); // also when an assertion fails: the host's shutdown waits for the held run
            await host.DisposeAsync();
        }
    }

    [Fact]
    public async Task Once_the_application_is_stopping_infer_is_503_and_ready_is_false()
    {
        await using var host = await KestrelHost.StartAsync(ik => ik.AddModel("affine", _ => new AffineBackend()));
        using (var before = await host.Client.GetAsync("/v2/health/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        }

        // Signals stopping without stopping the server (the test host is not run by Run()), so requests still arrive.
        host.App.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();

        using var refused = await host.PostJsonAsync("/v2/models/affine/infer", """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.NotNull(refused.Headers.RetryAfter);
        Assert.Contains("shutting down", await KestrelHost.ErrorAsync(refused), StringComparison.Ordinal);

        using var ready = await host.Client.GetAsync("/v2/health/ready");
        Assert.Equal(HttpStatusCode.BadRequest, ready.StatusCode);

        // The model takes no new requests either, so it is not ready (though it is still loaded and not yet drained).
        using (var modelReady = await host.Client.GetAsync("/v2/models/affine/ready"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, modelReady.StatusCode);
            using var doc = await KestrelHost.JsonAsync(modelReady);
            Assert.False(doc.RootElement.GetProperty("ready").GetBoolean());
        }

        using var live = await host.Client.GetAsync("/v2/health/live");
        Assert.Equal(HttpStatusCode.OK, live.StatusCode);
    }

    [Fact]
    public async Task Once_the_application_is_stopping_an_http2_request_is_503_without_a_header_kestrel_must_strip_and_warn_about()
    {
        var log = new RecordingLog(LogLevel.Warning);
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            configure: b =>
            {
                // HTTP/2 without TLS (prior knowledge), as a gateway or a gRPC-era client may speak it.
                b.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(l => l.Protocols = HttpProtocols.Http2));
                b.Logging.AddProvider(log);
            });
        host.App.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v2/models/affine/infer")
        {
            Content = new StringContent("""{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", Encoding.UTF8, "application/json"),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        using var refused = await host.Client.SendAsync(request);
        Assert.Equal(HttpVersion.Version20, refused.Version);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.NotNull(refused.Headers.RetryAfter);
        Assert.Empty(log.Entries);
    }

    [Fact]
    public async Task A_model_that_fails_to_load_is_503_with_the_reason_and_not_ready()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("broken", _ => throw new InvalidOperationException("weights missing"), o => o.WarmupRuns = 0),
            load: false);

        // Without a host-driven load, the model loads on first use; its failure comes back as a refusal.
        using var response = await host.PostJsonAsync("/v2/models/broken/infer", """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.NotNull(response.Headers.RetryAfter);
        string error = await KestrelHost.ErrorAsync(response);
        Assert.Contains("ModelNotReady", error, StringComparison.Ordinal);
        Assert.Contains("weights missing", error, StringComparison.Ordinal);

        using var ready = await host.Client.GetAsync("/v2/models/broken/ready");
        Assert.Equal(HttpStatusCode.BadRequest, ready.StatusCode);

        // Its inputs and outputs are unknown: the metadata says why rather than listing none.
        using (var metadata = await host.Client.GetAsync("/v2/models/broken"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, metadata.StatusCode);
            Assert.NotNull(metadata.Headers.RetryAfter);
            Assert.Contains("weights missing", await KestrelHost.ErrorAsync(metadata), StringComparison.Ordinal);
        }

        using var serverReady = await host.Client.GetAsync("/v2/health/ready");
        Assert.Equal(HttpStatusCode.BadRequest, serverReady.StatusCode);
    }

    [Fact]
    public async Task A_request_abandoned_while_its_model_runs_keeps_its_inputs_until_the_model_is_done()
    {
        var backend = new GatedStringBackend();
        var handled = new SemaphoreSlim(0);
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("gated", _ => backend, o =>
            {
                o.WarmupRuns = 0;
                o.Batching.MaxBatchSize = 1;

                // As under concurrent traffic: the request queues and a batch runs it, not the caller's own thread.
                o.Batching.AllowInlineExecution = false;
            }),
            middleware: app => app.Use(async (context, next) =>
            {
                try
                {
                    await next(context);
                }
                finally
                {
                    handled.Release();
                }
            }));
        using var release = new GateOpener(backend.Release); // disposed before the host, whose shutdown waits for the held run

        // The model starts on the request's strings, then the caller goes away while it runs.
        using var cts = new CancellationTokenSource();
        var call = host.Client.SendAsync(
            new HttpRequestMessage(HttpMethod.Post, "/v2/models/gated/infer")
            {
                Content = new StringContent("""{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["third","fourth"]}]}""", Encoding.UTF8, "application/json"),
            },
            cts.Token);
        Assert.True(await backend.Entered.WaitAsync(TimeSpan.FromSeconds(30)));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);

        // The endpoint has given up on the request (the scheduler answers a cancelled request at once) before the model
        // reads its inputs: they must still be the request's, not pooled arrays returned (and cleared, or reused) meanwhile.
        Assert.True(await handled.WaitAsync(TimeSpan.FromSeconds(30)));
        backend.Release();
        Assert.True(await backend.Exited.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("third|fourth", string.Join("|", backend.Seen.Select(s => s ?? "(null)")));
    }
}
