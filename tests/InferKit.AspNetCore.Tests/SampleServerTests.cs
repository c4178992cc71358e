using System.Net;
using System.Text.Json;
using InferKit.Models;
using InferKit.Samples.Server;
using InferKit.TestModels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>The sample server as it is wired (models, API keys, rate limiter), on Kestrel with an ephemeral port.</summary>
public sealed class SampleServerTests : IDisposable
{
    private readonly string _models = Path.Combine(Path.GetTempPath(), "inferkit-sample-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_models))
        {
            Directory.Delete(_models, recursive: true);
        }
    }

    private async Task<(WebApplication App, HttpClient Client)> StartAsync(params string[] args)
    {
        var app = SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", .. args],
            b => b.Logging.ClearProviders());
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        await app.Services.GetRequiredService<IModelRegistry>().LoadAllAsync();
        return (app, new HttpClient { BaseAddress = new Uri(address) });
    }

    private static string FraudRequest(float[] features) =>
        $"{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,{FraudModel.Features}],\"datatype\":\"FP32\",\"data\":{JsonSerializer.Serialize(features)}}}]}}";

    [Fact]
    public async Task Fraud_is_generated_on_first_start_reused_after_and_protected_by_the_api_key_when_one_is_configured()
    {
        var (app, client) = await StartAsync("--Sample:Models=fraud", "--Sample:ApiKeys:alice=key-a");
        await using (app)
        {
            using (client)
            {
                string path = Path.Combine(_models, "fraud.onnx");
                Assert.True(File.Exists(path));

                var features = FraudModel.Create().CreateInputs(1, seed: 9);
                using (var anonymous = await client.PostAsync("/v2/models/fraud/infer", new StringContent(FraudRequest(features))))
                {
                    Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
                }

                using (var healthz = await client.GetAsync("/healthz"))
                {
                    Assert.Equal(HttpStatusCode.OK, healthz.StatusCode);
                }

                using var request = new HttpRequestMessage(HttpMethod.Post, "/v2/models/fraud/infer") { Content = new StringContent(FraudRequest(features)) };
                request.Headers.Add(ApiKeyAuthentication.HeaderName, "key-a");
                using var response = await client.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                using var doc = await KestrelHost.JsonAsync(response);
                var probabilities = doc.RootElement.GetProperty("outputs").EnumerateArray()
                    .Single(o => o.GetProperty("name").GetString() == MlpModel.ProbabilitiesName)
                    .GetProperty("data").EnumerateArray().Select(e => e.GetSingle()).ToArray();
                var expected = FraudModel.Create().Forward(features, 1);
                Assert.Equal(expected.Length, probabilities.Length);
                for (int i = 0; i < expected.Length; i++)
                {
                    Assert.Equal(expected[i], probabilities[i], 1e-4f);
                }
            }
        }

        // A second start reuses the file it wrote.
        var written = File.GetLastWriteTimeUtc(Path.Combine(_models, "fraud.onnx"));
        var (again, againClient) = await StartAsync("--Sample:Models=fraud");
        await using (again)
        {
            using (againClient)
            {
                Assert.Equal(written, File.GetLastWriteTimeUtc(Path.Combine(_models, "fraud.onnx")));
                using var open = await againClient.PostAsync("/v2/models/fraud/infer", new StringContent(FraudRequest(new float[FraudModel.Features])));
                Assert.Equal(HttpStatusCode.OK, open.StatusCode); // no keys configured: open, as the README's curl lines expect
            }
        }
    }

    [Fact]
    public async Task The_sample_rate_limiter_answers_429_with_retry_after_per_client()
    {
        var (app, client) = await StartAsync("--Sample:Models=fraud", "--Sample:RateLimit:Permits=1", "--Sample:RateLimit:Period=01:00:00", "--Sample:ApiKeys:alice=key-a", "--Sample:ApiKeys:bob=key-b");
        await using (app)
        {
            using (client)
            {
                async Task<HttpResponseMessage> SendAsync(string key)
                {
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v2/models/fraud/infer") { Content = new StringContent(FraudRequest(new float[FraudModel.Features])) };
                    request.Headers.Add(ApiKeyAuthentication.HeaderName, key);
                    return await client.SendAsync(request);
                }

                // One request per hour per client: alice's second is refused, bob has his own bucket.
                using (var first = await SendAsync("key-a"))
                {
                    Assert.Equal(HttpStatusCode.OK, first.StatusCode);
                }

                using (var second = await SendAsync("key-a"))
                {
                    Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
                    Assert.NotNull(second.Headers.RetryAfter);
                    Assert.Contains("Rate limit", await KestrelHost.ErrorAsync(second), StringComparison.Ordinal);
                }

                using var bob = await SendAsync("key-b");
                Assert.Equal(HttpStatusCode.OK, bob.StatusCode);
            }
        }
    }

    [Fact]
    public async Task The_sample_healthz_reports_the_overall_status_and_each_models_state_without_an_api_key()
    {
        // The .http file sends GET /healthz for "ASP.NET Core health checks, with each model's state".
        var (app, client) = await StartAsync("--Sample:Models=fraud", "--Sample:ApiKeys:alice=key-a");
        await using (app)
        {
            using (client)
            {
                using var healthz = await client.GetAsync("/healthz");
                Assert.Equal(HttpStatusCode.OK, healthz.StatusCode);
                Assert.Equal("application/json", healthz.Content.Headers.ContentType?.MediaType);
                using var doc = await KestrelHost.JsonAsync(healthz);
                var root = doc.RootElement;
                Assert.Equal("Healthy", root.GetProperty("status").GetString());
                var fraud = root.GetProperty("models").GetProperty("fraud");
                Assert.Equal("Ready", fraud.GetProperty("state").GetString());
                Assert.Equal("Healthy", fraud.GetProperty("status").GetString());
                Assert.Equal(["fraud"], root.GetProperty("models").EnumerateObject().Select(p => p.Name));
            }
        }
    }

    [Fact]
    public async Task Requests_with_a_wrong_api_key_are_rate_limited_by_address()
    {
        // Otherwise a caller could try keys as fast as the server answers 401.
        var (app, client) = await StartAsync("--Sample:Models=fraud", "--Sample:RateLimit:Permits=1", "--Sample:RateLimit:Period=01:00:00", "--Sample:ApiKeys:alice=key-a");
        await using (app)
        {
            using (client)
            {
                async Task<HttpResponseMessage> GuessAsync(string key)
                {
                    using var request = new HttpRequestMessage(HttpMethod.Get, "/v2/models/fraud");
                    request.Headers.Add(ApiKeyAuthentication.HeaderName, key);
                    return await client.SendAsync(request);
                }

                using (var first = await GuessAsync("guess-1"))
                {
                    Assert.Equal(HttpStatusCode.Unauthorized, first.StatusCode);
                }

                using (var second = await GuessAsync("guess-2"))
                {
                    Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
                }

                using var alice = await GuessAsync("key-a"); // her own bucket
                Assert.Equal(HttpStatusCode.OK, alice.StatusCode);
            }
        }
    }

    [Theory]
    [InlineData("--Sample:RateLimit:Period=00:00:00", "Sample:RateLimit:Period")]
    [InlineData("--Sample:RateLimit:Period=-00:00:01", "Sample:RateLimit:Period")]
    [InlineData("--Sample:RateLimit:Permits=-1", "Sample:RateLimit:Permits")]
    public void Rate_limit_settings_out_of_range_fail_at_build_naming_the_setting(string setting, string name)
    {
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models=fraud", setting],
            b => b.Logging.ClearProviders()));
        Assert.Contains(name, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("50.00:00:00")] // past the replenishment timer's limit: the first request would fail with a 500
    [InlineData("49.17:02:47.2950000")] // one millisecond past it
    [InlineData("00:00:00.0001000")] // under a millisecond: the bucket would be replenished once, then never
    public void A_rate_limit_period_a_timer_cannot_take_fails_at_build_naming_the_setting_the_value_and_the_range(string period)
    {
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models=fraud", $"--Sample:RateLimit:Period={period}"],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:RateLimit:Period", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"it is {period}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("from 00:00:00.0010000 to 49.17:02:47.2940000", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_rate_limit_period_at_the_timers_limit_is_served()
    {
        // The client's token bucket (and its timer) is made on its first request.
        var (app, client) = await StartAsync("--Sample:Models=fraud", "--Sample:RateLimit:Permits=1", "--Sample:RateLimit:Period=49.17:02:47.294");
        await using (app)
        {
            using (client)
            {
                using var first = await client.PostAsync("/v2/models/fraud/infer", new StringContent(FraudRequest(new float[FraudModel.Features])));
                Assert.Equal(HttpStatusCode.OK, first.StatusCode);
                using var second = await client.PostAsync("/v2/models/fraud/infer", new StringContent(FraudRequest(new float[FraudModel.Features])));
                Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
            }
        }
    }

    [Theory]
    [InlineData(0)] // created, never written: a crash right after opening it
    [InlineData(100)] // half-written
    [InlineData(-1)] // the right length, damaged
    public async Task A_damaged_fraud_file_left_by_an_earlier_start_is_replaced_not_served(int keep)
    {
        byte[] good = FraudModel.Create().ToOnnx();
        byte[] damaged = keep >= 0 ? good[..keep] : good.Select((b, i) => i == good.Length / 2 ? (byte)~b : b).ToArray();
        Directory.CreateDirectory(_models);
        string path = Path.Combine(_models, "fraud.onnx");
        await File.WriteAllBytesAsync(path, damaged);

        Assert.Equal(path, FraudModel.EnsureFile(_models));

        Assert.Equal(good, await File.ReadAllBytesAsync(path));
        Assert.Equal([path], Directory.GetFiles(_models)); // no temporary file left beside it
    }

    [Theory]
    [InlineData("--Sample:ApiKeys=s3cret", "Sample:ApiKeys is a single value")] // would leave every endpoint open
    [InlineData("--Sample:ApiKeys:alice=", "Sample:ApiKeys:alice is empty")] // an unset variable: would leave every endpoint open
    [InlineData("--Sample:ApiKeys:alice= s3cret", "Sample:ApiKeys:alice starts or ends with white space")] // HTTP trims it: alice could never get in
    public void Api_key_settings_that_cannot_be_used_fail_at_build_instead_of_leaving_the_endpoints_open(string setting, string message)
    {
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models=fraud", setting],
            b => b.Logging.ClearProviders()));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_clients_with_the_same_api_key_fail_at_build()
    {
        // The key would authenticate as whichever client came first, and the other's rate limit and name would never apply.
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models=fraud", "--Sample:ApiKeys:alice=k1", "--Sample:ApiKeys:bob=k1"],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:ApiKeys:bob has the same key as Sample:ApiKeys:alice", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sample_models_given_as_a_json_array_are_the_models_served()
    {
        // "Models": ["fraud"] in appsettings.json is Sample:Models:0=fraud in configuration.
        Directory.CreateDirectory(_models);
        await File.WriteAllTextAsync(Path.Combine(_models, "appsettings.json"), """{ "Sample": { "Models": ["fraud"] } }""");
        await using var app = SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--contentRoot={_models}", $"--Sample:ModelsPath={_models}"],
            b => b.Logging.ClearProviders());
        Assert.Equal(["fraud"], app.Services.GetRequiredService<IModelRegistry>().ModelNames);
    }

    [Fact]
    public void Sample_models_set_both_as_a_list_and_as_an_array_fail_at_build()
    {
        // The sample's appsettings.json has the list; an array on top of it cannot be told apart from one below it.
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models:0=fraud"],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:Models is set both as a list", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Empty_sample_models_fail_at_build_naming_the_setting()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", "--Sample:Models="],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:Models is empty", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--Sample:Models=fraud,fraud")]
    [InlineData("--Sample:Models=fraud, resnet18 ,fraud")]
    public void A_model_named_twice_in_sample_models_fails_at_build_naming_the_setting_and_the_model(string models)
    {
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--Sample:ModelsPath={_models}", models],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:Models names 'fraud' more than once", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_model_named_twice_in_a_sample_models_json_array_fails_at_build()
    {
        Directory.CreateDirectory(_models);
        await File.WriteAllTextAsync(Path.Combine(_models, "appsettings.json"), """{ "Sample": { "Models": ["fraud", "fraud"] } }""");
        var ex = Assert.Throws<InvalidOperationException>(() => SampleServer.Build(
            ["--urls=http://127.0.0.1:0", $"--contentRoot={_models}", $"--Sample:ModelsPath={_models}"],
            b => b.Logging.ClearProviders()));
        Assert.Contains("Sample:Models names 'fraud' more than once", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_sample_serves_all_three_models()
    {
        var (app, client) = await StartAsync();
        await using (app)
        {
            using (client)
            {
                using (var resnet = await client.PostAsync("/v2/models/resnet18/infer", new StringContent(
                    $"{{\"inputs\":[{{\"name\":\"{RealModels.ResNet18Input}\",\"shape\":[1,3,224,224],\"datatype\":\"FP32\",\"data\":{JsonSerializer.Serialize(Enumerable.Repeat(0.5f, 3 * 224 * 224))}}}]}}")))
                {
                    Assert.Equal(HttpStatusCode.OK, resnet.StatusCode);
                    using var doc = await KestrelHost.JsonAsync(resnet);
                    var output = doc.RootElement.GetProperty("outputs")[0];
                    Assert.Equal([1L, 512L, 1L, 1L], output.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
                }

                var tokens = RealModels.TokenizeMiniLm(["hello world"]);
                string ids = JsonSerializer.Serialize(tokens.InputIds.ToArray());
                string mask = JsonSerializer.Serialize(tokens.AttentionMask.ToArray());
                string types = JsonSerializer.Serialize(tokens.TokenTypeIds.ToArray());
                int n = tokens.SequenceLength;
                using var minilm = await client.PostAsync("/v2/models/minilm/infer", new StringContent($$"""
                    {"inputs":[
                      {"name":"input_ids","shape":[1,{{n}}],"datatype":"INT64","data":{{ids}}},
                      {"name":"attention_mask","shape":[1,{{n}}],"datatype":"INT64","data":{{mask}}},
                      {"name":"token_type_ids","shape":[1,{{n}}],"datatype":"INT64","data":{{types}}}]}
                    """));
                Assert.Equal(HttpStatusCode.OK, minilm.StatusCode);
                using var minilmDoc = await KestrelHost.JsonAsync(minilm);
                var outputs = minilmDoc.RootElement.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
                Assert.Equal([1L, n, 384L], outputs[RealModels.MiniLmLastHiddenState].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
                Assert.Equal([1L, 384L], outputs[RealModels.MiniLmPooled].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            }
        }
    }
}
