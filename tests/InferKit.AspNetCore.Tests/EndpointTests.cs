using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.AspNetCore.Tests;

public sealed class EndpointTests
{
    private const string AffineRequest = """
        {"id":"r-1","inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[-1,-2,-3,-4.5]]}]}
        """;

    private static Task<KestrelHost> StartAffineAsync(bool load = true, string prefix = "") =>
        KestrelHost.StartAsync(ik => ik.AddModel("affine", _ => new AffineBackend()), prefix: prefix, load: load);

    [Fact]
    public async Task Server_metadata_names_the_server_and_the_binary_extension()
    {
        await using var host = await StartAffineAsync();
        using var response = await host.Client.GetAsync("/v2");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = await KestrelHost.JsonAsync(response);
        Assert.Equal("inferkit", doc.RootElement.GetProperty("name").GetString());
        Assert.False(string.IsNullOrEmpty(doc.RootElement.GetProperty("version").GetString()));
        Assert.Contains("binary_tensor_data", doc.RootElement.GetProperty("extensions").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async Task Live_always_and_ready_only_once_required_models_are_loaded()
    {
        await using var host = await StartAffineAsync(load: false);
        using (var live = await host.Client.GetAsync("/v2/health/live"))
        {
            Assert.Equal(HttpStatusCode.OK, live.StatusCode);
            using var doc = await KestrelHost.JsonAsync(live);
            Assert.True(doc.RootElement.GetProperty("live").GetBoolean());
        }

        using (var notReady = await host.Client.GetAsync("/v2/health/ready"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, notReady.StatusCode);
            using var doc = await KestrelHost.JsonAsync(notReady);
            Assert.False(doc.RootElement.GetProperty("ready").GetBoolean());
        }

        using (var modelNotReady = await host.Client.GetAsync("/v2/models/affine/ready"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, modelNotReady.StatusCode);
        }

        await host.LoadAsync();
        using (var ready = await host.Client.GetAsync("/v2/health/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
            using var doc = await KestrelHost.JsonAsync(ready);
            Assert.True(doc.RootElement.GetProperty("ready").GetBoolean());
        }

        using (var modelReady = await host.Client.GetAsync("/v2/models/affine/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, modelReady.StatusCode);
            using var doc = await KestrelHost.JsonAsync(modelReady);
            Assert.Equal("affine", doc.RootElement.GetProperty("name").GetString());
            Assert.True(doc.RootElement.GetProperty("ready").GetBoolean());
        }

        using (var versionReady = await host.Client.GetAsync("/v2/models/affine/versions/1/ready"))
        {
            Assert.Equal(HttpStatusCode.OK, versionReady.StatusCode);
        }
    }

    [Fact]
    public async Task A_virtual_model_is_ready_only_when_every_member_is_and_the_endpoint_agrees_with_the_registry_and_the_readiness_check()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("small", _ => new AffineBackend()).AddModel("large", _ => new AffineBackend(), o => o.Required = false)
                .AddCascade("cascade", c => c.Then("small", InferKit.Selection.AcceptanceRule.TopProbability(0.9, output: "y")).Then("large"))
                .AddAdaptiveModel("auto", a =>
                {
                    a.Variants.Add("large");
                    a.Variants.Add("small");
                }),
            configure: b => b.Services.AddHealthChecks().AddInferKitReadinessCheck(),
            load: false);
        var checks = host.App.Services.GetRequiredService<Microsoft.Extensions.Diagnostics.HealthChecks.HealthCheckService>();

        // Only the first stage of the cascade (and the second variant of "auto") is loaded.
        await host.Registry.LoadAsync("small");
        foreach (var model in new[] { "cascade", "auto" })
        {
            using var response = await host.Client.GetAsync($"/v2/models/{model}/ready");
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            using var doc = await KestrelHost.JsonAsync(response);
            Assert.False(doc.RootElement.GetProperty("ready").GetBoolean());
            Assert.False(host.Registry.GetModel(model).IsReady);
            Assert.Equal("NotLoaded", (await checks.CheckHealthAsync()).Entries["inferkit"].Data[model]);
        }

        // The metadata of "auto" already lists the inputs, from its loaded variant.
        using (var metadata = await host.Client.GetAsync("/v2/models/auto"))
        {
            using var doc = await KestrelHost.JsonAsync(metadata);
            Assert.Equal("x", Assert.Single(doc.RootElement.GetProperty("inputs").EnumerateArray()).GetProperty("name").GetString());
        }

        await host.Registry.LoadAsync("large");
        foreach (var model in new[] { "cascade", "auto" })
        {
            using var response = await host.Client.GetAsync($"/v2/models/{model}/ready");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("Ready", (await checks.CheckHealthAsync()).Entries["inferkit"].Data[model]);
        }
    }

    [Fact]
    public async Task A_cascade_answer_kept_from_an_earlier_stage_says_so_in_the_response_parameters()
    {
        await using var host = await KestrelHost.StartAsync(ik => ik
            .AddModel("small", _ => new AffineBackend())
            .AddModel("large", _ => throw new InvalidOperationException("weights missing"), o => o.Required = false)
            .AddCascade("cascade", c => c.Then("small", InferKit.Selection.AcceptanceRule.Custom(static _ => false, output: "y")).Then("large")));

        // Every row is sent on to "large", which failed to load: "small" answers them, and the response says so.
        using var response = await host.PostJsonAsync("/v2/models/cascade/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = await KestrelHost.JsonAsync(response);
        var root = doc.RootElement;
        Assert.Equal("cascade", root.GetProperty("model_name").GetString());
        var parameters = root.GetProperty("parameters");
        Assert.Equal("small", parameters.GetProperty("inferkit_answered_by").GetString());
        Assert.StartsWith("Stage 2 ('large') could not answer (Refused ModelNotReady): Model 'large' is not available", parameters.GetProperty("inferkit_note").GetString(), StringComparison.Ordinal);

        // A plain model's answer has no such parameters.
        using var plain = await host.PostJsonAsync("/v2/models/small/infer", AffineRequest);
        using var plainDoc = await KestrelHost.JsonAsync(plain);
        Assert.False(plainDoc.RootElement.TryGetProperty("parameters", out _));
    }

    [Fact]
    public async Task Model_metadata_lists_inputs_and_outputs_with_dynamic_dimensions_as_minus_one()
    {
        await using var host = await StartAffineAsync();
        foreach (var path in new[] { "/v2/models/affine", "/v2/models/affine/versions/1" })
        {
            using var response = await host.Client.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var doc = await KestrelHost.JsonAsync(response);
            var root = doc.RootElement;
            Assert.Equal("affine", root.GetProperty("name").GetString());
            Assert.Equal(["1"], root.GetProperty("versions").EnumerateArray().Select(e => e.GetString()));
            Assert.False(string.IsNullOrEmpty(root.GetProperty("platform").GetString()));
            var input = Assert.Single(root.GetProperty("inputs").EnumerateArray());
            Assert.Equal("x", input.GetProperty("name").GetString());
            Assert.Equal("FP32", input.GetProperty("datatype").GetString());
            Assert.Equal([-1L, 4L], input.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            var outputs = root.GetProperty("outputs").EnumerateArray().ToArray();
            Assert.Equal(["y", "total"], outputs.Select(o => o.GetProperty("name").GetString()));
            Assert.Equal("FP64", outputs[1].GetProperty("datatype").GetString());
        }
    }

    [Fact]
    public async Task An_onnx_models_metadata_names_its_platform_as_the_protocol_does()
    {
        var mlp = new MlpModel(inputSize: 4, hiddenSize: 8, classes: 2, seed: 3);
        await using var host = await KestrelHost.StartAsync(ik => ik.AddOnnxModel("mlp", ModelSource.FromBytes(mlp.ToOnnx())));
        using var response = await host.Client.GetAsync("/v2/models/mlp");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = await KestrelHost.JsonAsync(response);
        Assert.Equal("onnx_onnxv1", doc.RootElement.GetProperty("platform").GetString());
    }

    [Fact]
    public async Task Model_metadata_before_the_model_has_loaded_is_503_with_retry_after_not_an_empty_signature()
    {
        await using var host = await StartAffineAsync(load: false);
        using (var early = await host.Client.GetAsync("/v2/models/affine"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, early.StatusCode);
            Assert.True(early.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
            string error = await KestrelHost.ErrorAsync(early);
            Assert.Contains("'affine'", error, StringComparison.Ordinal);
            Assert.Contains("NotLoaded", error, StringComparison.Ordinal);
        }

        await host.LoadAsync();
        using var loaded = await host.Client.GetAsync("/v2/models/affine");
        Assert.Equal(HttpStatusCode.OK, loaded.StatusCode);
    }

    [Theory]
    [InlineData("/v2/models/nope")]
    [InlineData("/v2/models/nope/ready")]
    [InlineData("/v2/models/affine/versions/9")]
    [InlineData("/v2/models/affine/versions/9/ready")]
    public async Task Unknown_models_and_versions_are_404_with_an_error(string path)
    {
        await using var host = await StartAffineAsync();
        using var response = await host.Client.GetAsync(path);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        string error = await KestrelHost.ErrorAsync(response);
        Assert.Contains(path.Contains("nope", StringComparison.Ordinal) ? "'nope'" : "'9'", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Json_inference_returns_every_output_and_echoes_the_id()
    {
        await using var host = await StartAffineAsync();
        using var response = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = await KestrelHost.JsonAsync(response);
        var root = doc.RootElement;
        Assert.Equal("affine", root.GetProperty("model_name").GetString());
        Assert.Equal("1", root.GetProperty("model_version").GetString());
        Assert.Equal("r-1", root.GetProperty("id").GetString());
        var outputs = root.GetProperty("outputs").EnumerateArray().ToArray();
        Assert.Equal("y", outputs[0].GetProperty("name").GetString());
        Assert.Equal([2L, 4L], outputs[0].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal(AffineBackend.Expected([1, 2, 3, 4, -1, -2, -3, -4.5f]), outputs[0].GetProperty("data").EnumerateArray().Select(e => e.GetSingle()));
        Assert.Equal([10.0, -10.5], outputs[1].GetProperty("data").EnumerateArray().Select(e => e.GetDouble()));
    }

    [Fact]
    public async Task A_versioned_infer_route_serves_that_version_and_an_unknown_version_is_404()
    {
        await using var host = await StartAffineAsync();
        using (var ok = await host.PostJsonAsync("/v2/models/affine/versions/1/infer", AffineRequest))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            var recorded = host.Recorder.Requests.Last();
            Assert.Equal("1", recorded.Version);
        }

        using var missing = await host.PostJsonAsync("/v2/models/affine/versions/7/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("'7'", await KestrelHost.ErrorAsync(missing), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Requested_outputs_limit_the_response_and_an_unknown_one_is_400()
    {
        await using var host = await StartAffineAsync();
        string json = """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,1,1,1]}],"outputs":[{"name":"total"}]}""";
        using (var response = await host.PostJsonAsync("/v2/models/affine/infer", json))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var doc = await KestrelHost.JsonAsync(response);
            var output = Assert.Single(doc.RootElement.GetProperty("outputs").EnumerateArray());
            Assert.Equal("total", output.GetProperty("name").GetString());
            Assert.Equal(4.0, output.GetProperty("data")[0].GetDouble());
        }

        json = """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,1,1,1]}],"outputs":[{"name":"nope"}]}""";
        using var bad = await host.PostJsonAsync("/v2/models/affine/infer", json);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        string error = await KestrelHost.ErrorAsync(bad);
        Assert.Contains("'affine'", error, StringComparison.Ordinal);
        Assert.Contains("'nope'", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Every_datatype_goes_through_json_and_binary_alike()
    {
        await using var host = await KestrelHost.StartAsync(ik => ik.AddModel("echo", _ => new EchoBackend()));
        var inputs = new (string Name, string Type, string Json)[]
        {
            ("fp32", "FP32", "[1.5,-2.25,3e-5]"),
            ("fp16", "FP16", "[0.5,-1024,0.099975586]"),
            ("bf16", "BF16", "[1.5,-0.25,256]"),
            ("fp64", "FP64", "[0.1,-1e300,5e-324]"),
            ("int8", "INT8", "[-128,0,127]"),
            ("int16", "INT16", "[-32768,1,32767]"),
            ("int32", "INT32", "[-2147483648,2,2147483647]"),
            ("int64", "INT64", "[-9223372036854775808,3,9223372036854775807]"),
            ("uint8", "UINT8", "[0,4,255]"),
            ("uint16", "UINT16", "[0,5,65535]"),
            ("uint32", "UINT32", "[0,6,4294967295]"),
            ("uint64", "UINT64", "[0,7,18446744073709551615]"),
            ("bool", "BOOL", "[true,false,true]"),
            ("bytes", "BYTES", "[\"a\",\"\",\"日本語\"]"),
        };
        string json = "{\"inputs\":[" + string.Join(",", inputs.Select(i => $"{{\"name\":\"{i.Name}\",\"shape\":[3],\"datatype\":\"{i.Type}\",\"data\":{i.Json}}}")) + "]}";

        // JSON in, JSON out: every value comes back as it went.
        using var jsonResponse = await host.PostJsonAsync("/v2/models/echo/infer", json);
        Assert.Equal(HttpStatusCode.OK, jsonResponse.StatusCode);
        using var jsonDoc = await KestrelHost.JsonAsync(jsonResponse);
        var jsonOutputs = jsonDoc.RootElement.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!);
        foreach (var (name, type, data) in inputs)
        {
            var o = jsonOutputs[name + "_out"];
            Assert.Equal(type, o.GetProperty("datatype").GetString());
            Assert.Equal([3L], o.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            using var expected = JsonDocument.Parse(data);
            Assert.Equal(
                expected.RootElement.EnumerateArray().Select(Normalize),
                o.GetProperty("data").EnumerateArray().Select(Normalize));
        }

        // The same request with every output as binary: the bytes are the tensors' raw little-endian bytes.
        using var binaryResponse = await host.PostJsonAsync("/v2/models/echo/infer", json.Insert(1, "\"parameters\":{\"binary_data_output\":true},"));
        Assert.Equal(HttpStatusCode.OK, binaryResponse.StatusCode);
        Assert.Equal("application/octet-stream", binaryResponse.Content.Headers.ContentType?.MediaType);
        var (binaryDoc, binary) = await KestrelHost.SplitAsync(binaryResponse);
        using var binaryScope = binaryDoc;
        int offset = 0;
        foreach (var o in binaryDoc.RootElement.GetProperty("outputs").EnumerateArray())
        {
            Assert.False(o.TryGetProperty("data", out _));
            int size = (int)o.GetProperty("parameters").GetProperty("binary_data_size").GetInt64();
            var bytes = binary.AsSpan(offset, size);
            offset += size;
            string name = o.GetProperty("name").GetString()!;
            var fromJson = jsonOutputs[name];
            Assert.Equal(Encode(fromJson), bytes.ToArray());
        }

        Assert.Equal(binary.Length, offset);
    }

    [Fact]
    public async Task Binary_inputs_from_a_triton_style_body_give_the_same_outputs_as_json_on_a_real_onnx_model()
    {
        var mlp = new MlpModel(inputSize: 32, hiddenSize: 64, classes: 2, seed: 11);
        await using var host = await KestrelHost.StartAsync(ik => ik.AddOnnxModel("mlp", ModelSource.FromBytes(mlp.ToOnnx())));
        var input = mlp.CreateInputs(rows: 3, seed: 5);

        string jsonRequest = $"{{\"inputs\":[{{\"name\":\"input\",\"shape\":[3,32],\"datatype\":\"FP32\",\"data\":{JsonSerializer.Serialize(input)}}}]}}";
        using var jsonResponse = await host.PostJsonAsync("/v2/models/mlp/infer", jsonRequest);
        Assert.Equal(HttpStatusCode.OK, jsonResponse.StatusCode);
        using var jsonDoc = await KestrelHost.JsonAsync(jsonResponse);

        string header = """
            {"inputs":[{"name":"input","shape":[3,32],"datatype":"FP32","parameters":{"binary_data_size":384}}],
             "outputs":[{"name":"logits","parameters":{"binary_data":true}},{"name":"probabilities","parameters":{"binary_data":true}}]}
            """;
        using var binaryResponse = await host.PostBinaryAsync("/v2/models/mlp/infer", header, MemoryMarshal.AsBytes(input.AsSpan()).ToArray());
        Assert.Equal(HttpStatusCode.OK, binaryResponse.StatusCode);
        var (binaryDoc, binary) = await KestrelHost.SplitAsync(binaryResponse);
        using var binaryScope = binaryDoc;

        var expectedProbabilities = mlp.Forward(input, 3, out var expectedLogits);
        var jsonOutputs = jsonDoc.RootElement.GetProperty("outputs").EnumerateArray().ToArray();
        var binaryOutputs = binaryDoc.RootElement.GetProperty("outputs").EnumerateArray().ToArray();
        int offset = 0;
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(jsonOutputs[i].GetProperty("name").GetString(), binaryOutputs[i].GetProperty("name").GetString());
            int size = (int)binaryOutputs[i].GetProperty("parameters").GetProperty("binary_data_size").GetInt64();
            var fromBinary = MemoryMarshal.Cast<byte, float>(binary.AsSpan(offset, size)).ToArray();
            offset += size;
            var fromJson = jsonOutputs[i].GetProperty("data").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            Assert.Equal(fromJson, fromBinary); // bit for bit: JSON floats round-trip exactly
            var expected = i == 0 ? expectedLogits : expectedProbabilities;
            Assert.Equal(expected.Length, fromBinary.Length);
            for (int k = 0; k < expected.Length; k++)
            {
                Assert.Equal(expected[k], fromBinary[k], 1e-4f);
            }
        }
    }

    [Fact]
    public async Task Binary_and_json_outputs_can_be_mixed_per_output()
    {
        await using var host = await StartAffineAsync();
        string header = """
            {"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],
             "parameters":{"binary_data_output":true},
             "outputs":[{"name":"y"},{"name":"total","parameters":{"binary_data":false}}]}
            """;
        float[] x = [1, 2, 3, 4];
        using var response = await host.PostBinaryAsync("/v2/models/affine/infer", header, MemoryMarshal.AsBytes(x.AsSpan()).ToArray());
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var (doc, binary) = await KestrelHost.SplitAsync(response);
        using var scope = doc;
        var outputs = doc.RootElement.GetProperty("outputs").EnumerateArray().ToArray();
        Assert.Equal(16, outputs[0].GetProperty("parameters").GetProperty("binary_data_size").GetInt64());
        Assert.Equal(AffineBackend.Expected(x), MemoryMarshal.Cast<byte, float>(binary).ToArray());
        Assert.Equal(10.0, outputs[1].GetProperty("data")[0].GetDouble());
    }

    [Fact]
    public async Task The_endpoints_can_live_under_a_prefix()
    {
        await using var host = await StartAffineAsync(prefix: "/inference");
        using (var metadata = await host.Client.GetAsync("/inference/v2/models/affine"))
        {
            Assert.Equal(HttpStatusCode.OK, metadata.StatusCode);
        }

        using (var infer = await host.PostJsonAsync("/inference/v2/models/affine/infer", AffineRequest))
        {
            Assert.Equal(HttpStatusCode.OK, infer.StatusCode);
        }

        using var unprefixed = await host.Client.GetAsync("/v2");
        Assert.Equal(HttpStatusCode.NotFound, unprefixed.StatusCode);
    }

    [Theory]
    [InlineData("{\"inputs\":[{\"name\":\"x\"", "malformed")]
    [InlineData("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,2,3]}]}", "dimension 1 must be 4")]
    [InlineData("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"INT32\",\"data\":[1,2,3,4]}]}", "must be Float32 (FP32), got Int32 (INT32)")]
    [InlineData("{\"inputs\":[{\"name\":\"z\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}", "unexpected input 'z'")]
    [InlineData("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3]}]}", "holds 4 FP32 elements, but 'data' has 3")]
    public async Task Invalid_requests_are_400_naming_what_was_wrong_and_the_server_keeps_serving(string json, string expected)
    {
        await using var host = await StartAffineAsync();
        using (var response = await host.PostJsonAsync("/v2/models/affine/infer", json))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains(expected, await KestrelHost.ErrorAsync(response), StringComparison.Ordinal);
        }

        using var next = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
    }

    [Fact]
    public async Task Errors_from_the_model_signature_name_the_model()
    {
        await using var host = await StartAffineAsync();
        using var response = await host.PostJsonAsync("/v2/models/affine/infer", """{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}""");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Model 'affine'", await KestrelHost.ErrorAsync(response), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_model_is_404()
    {
        await using var host = await StartAffineAsync();
        using var response = await host.PostJsonAsync("/v2/models/nope/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Contains("'nope'", await KestrelHost.ErrorAsync(response), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("gzip", null)]
    [InlineData("br", null)]
    [InlineData(null, "utf-16")]
    public async Task A_compressed_or_non_utf8_body_is_415_naming_what_was_sent_and_the_server_keeps_serving(string? coding, string? charset)
    {
        await using var host = await StartAffineAsync();
        byte[] body = charset is null ? Encoding.UTF8.GetBytes(AffineRequest) : Encoding.Unicode.GetBytes(AffineRequest);
        if (coding == "gzip")
        {
            var compressed = new MemoryStream();
            using (var gzip = new System.IO.Compression.GZipStream(compressed, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
            {
                gzip.Write(body);
            }

            body = compressed.ToArray();
        }

        var content = new ByteArrayContent(body);
        content.Headers.TryAddWithoutValidation("Content-Type", charset is null ? "application/json" : $"application/json; charset={charset}");
        if (coding is not null)
        {
            content.Headers.ContentEncoding.Add(coding);
        }

        using (var response = await host.Client.PostAsync("/v2/models/affine/infer", content))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            string error = await KestrelHost.ErrorAsync(response);
            Assert.Contains(coding is null ? "charset" : "Content-Encoding", error, StringComparison.Ordinal);
            Assert.Contains($"'{coding ?? charset}'", error, StringComparison.Ordinal);
            if (coding is not null)
            {
                Assert.Equal("identity", response.Headers.GetValues("Accept-Encoding").Single());
            }
        }

        // What the server reads is still served: identity coding, and UTF-8 named in any spelling.
        using var identity = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest, r => r.Content!.Headers.ContentEncoding.Add("identity"));
        Assert.Equal(HttpStatusCode.OK, identity.StatusCode);
        var quoted = new StringContent(AffineRequest);
        quoted.Headers.Remove("Content-Type");
        quoted.Headers.TryAddWithoutValidation("Content-Type", "application/json; charset=\"UTF-8\"");
        using var utf8 = await host.Client.PostAsync("/v2/models/affine/infer", quoted);
        Assert.Equal(HttpStatusCode.OK, utf8.StatusCode);
    }

    [Fact]
    public async Task A_gzip_body_is_served_behind_the_request_decompression_middleware_that_the_415_names_within_the_size_limit()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            configure: b =>
            {
                b.Services.AddRequestDecompression();
                b.Services.Configure<InferKitEndpointOptions>(o => o.MaxRequestBytes = 1024);
            },
            middleware: app => app.UseRequestDecompression());

        static ByteArrayContent Gzip(string json)
        {
            var compressed = new MemoryStream();
            using (var gzip = new System.IO.Compression.GZipStream(compressed, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
            {
                gzip.Write(Encoding.UTF8.GetBytes(json));
            }

            var content = new ByteArrayContent(compressed.ToArray());
            content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
            content.Headers.ContentEncoding.Add("gzip");
            return content;
        }

        using (var ok = await host.Client.PostAsync("/v2/models/affine/infer", Gzip(AffineRequest)))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        // The limit counts the bytes after decompression: 5 KB of 'a' compresses far below 1 KB.
        using var big = await host.Client.PostAsync("/v2/models/affine/infer", Gzip(AffineRequest.TrimEnd()[..^1] + ",\"pad\":\"" + new string('a', 5000) + "\"}"));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.StatusCode);
    }

    [Fact]
    public async Task A_bad_inference_header_length_is_400()
    {
        await using var host = await StartAffineAsync();
        using var response = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest, r => r.Headers.Add(InferKitHeaders.InferenceHeaderContentLength, "abc"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(InferKitHeaders.InferenceHeaderContentLength, await KestrelHost.ErrorAsync(response), StringComparison.Ordinal);

        using var tooLong = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest, r => r.Headers.Add(InferKitHeaders.InferenceHeaderContentLength, "100000"));
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
    }

    [Fact]
    public async Task Binary_data_sent_without_its_inference_header_content_length_is_400_naming_the_header()
    {
        await using var host = await StartAffineAsync();
        string header = """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}""";
        var content = new ByteArrayContent([.. Encoding.UTF8.GetBytes(header), .. new byte[16]]);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        using var response = await host.Client.PostAsync("/v2/models/affine/infer", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        string error = await KestrelHost.ErrorAsync(response);
        Assert.Contains(InferKitHeaders.InferenceHeaderContentLength, error, StringComparison.Ordinal);
        Assert.Contains("16 more", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bodies_over_the_size_limit_are_413_whether_their_length_is_declared_or_streamed()
    {
        await using var host = await KestrelHost.StartAsync(
            ik => ik.AddModel("affine", _ => new AffineBackend()),
            configure: b => b.Services.Configure<InferKitEndpointOptions>(o => o.MaxRequestBytes = 1024));
        string big = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}],\"pad\":\"" + new string('a', 2000) + "\"}";

        using (var declared = await host.PostJsonAsync("/v2/models/affine/infer", big))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, declared.StatusCode);
            Assert.Contains("1024", await KestrelHost.ErrorAsync(declared), StringComparison.Ordinal);
        }

        using (var streamed = await host.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v2/models/affine/infer")
        {
            Content = new StreamContent(new UnknownLengthStream(Encoding.UTF8.GetBytes(big))),
        }))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, streamed.StatusCode);
        }

        // Just under the limit is fine, and the server keeps serving.
        using var small = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.OK, small.StatusCode);
    }

    [Fact]
    public async Task A_body_with_a_malformed_chunk_is_400_with_a_json_error_and_the_server_keeps_serving()
    {
        await using var host = await StartAffineAsync();
        using (var client = new System.Net.Sockets.TcpClient())
        {
            await client.ConnectAsync(host.Client.BaseAddress!.Host, host.Client.BaseAddress.Port);
            var stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(
                "POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"));

            // Kestrel closes the connection after the answer to a malformed body: read to the end.
            var answer = new MemoryStream();
            await stream.CopyToAsync(answer);
            string text = Encoding.UTF8.GetString(answer.ToArray());
            Assert.StartsWith("HTTP/1.1 400", text, StringComparison.Ordinal);
            Assert.Contains("Content-Type: application/json", text, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("{\"error\":\"The request body could not be read: ", text, StringComparison.Ordinal);
        }

        using var ok = await host.PostJsonAsync("/v2/models/affine/infer", AffineRequest);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task Map_fails_clearly_without_AddInferKit()
    {
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder();
        await using var app = builder.Build();
        var ex = Assert.Throws<InvalidOperationException>(() => app.MapInferKit());
        Assert.Contains("AddInferKit", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Mapping_twice_under_the_same_prefix_fails_at_map_time_and_another_prefix_is_allowed()
    {
        // Mapped twice, every /v2 route would be ambiguous: each request a 500 from the router.
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder();
        builder.Services.AddInferKit().AddModel("affine", _ => new AffineBackend());
        await using var app = builder.Build();
        app.MapInferKit();
        var ex = Assert.Throws<InvalidOperationException>(() => app.MapInferKit("/"));
        Assert.Contains("already mapped", ex.Message, StringComparison.Ordinal);

        app.MapInferKit("/inference");
        Assert.Throws<InvalidOperationException>(() => app.MapInferKit("/Inference/"));
    }

    [Fact]
    public async Task Invalid_endpoint_options_fail_at_map_time_naming_every_problem()
    {
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder();
        builder.Services.AddInferKit().AddModel("affine", _ => new AffineBackend());
        builder.Services.Configure<InferKitEndpointOptions>(o =>
        {
            o.MaxRequestBytes = 0;
            o.MaxTimeout = TimeSpan.Zero;
        });
        await using var app = builder.Build();
        var ex = Assert.Throws<InvalidOperationException>(() => app.MapInferKit());
        Assert.Contains("MaxRequestBytes", ex.Message, StringComparison.Ordinal);
        Assert.Contains("MaxTimeout", ex.Message, StringComparison.Ordinal);
    }

    private static string Normalize(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number when e.GetRawText().Contains('.', StringComparison.Ordinal) || e.GetRawText().Contains('e', StringComparison.OrdinalIgnoreCase)
            => e.GetDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        JsonValueKind.Number => e.GetRawText(),
        _ => e.ToString(),
    };

    /// <summary>The binary form of a JSON output, computed independently of the server's writer.</summary>
    private static byte[] Encode(JsonElement output)
    {
        var data = output.GetProperty("data").EnumerateArray().ToArray();
        Assert.True(TensorElementTypes.TryParseProtocolName(output.GetProperty("datatype").GetString(), out var type));
        return type switch
        {
            TensorElementType.Float32 => Bytes(data.Select(e => e.GetSingle()).ToArray()),
            TensorElementType.Float16 => Bytes(data.Select(e => (Half)e.GetSingle()).ToArray()),
            TensorElementType.BFloat16 => Bytes(data.Select(e => (BFloat16)e.GetSingle()).ToArray()),
            TensorElementType.Float64 => Bytes(data.Select(e => e.GetDouble()).ToArray()),
            TensorElementType.Int8 => Bytes(data.Select(e => e.GetSByte()).ToArray()),
            TensorElementType.Int16 => Bytes(data.Select(e => e.GetInt16()).ToArray()),
            TensorElementType.Int32 => Bytes(data.Select(e => e.GetInt32()).ToArray()),
            TensorElementType.Int64 => Bytes(data.Select(e => e.GetInt64()).ToArray()),
            TensorElementType.UInt8 => Bytes(data.Select(e => e.GetByte()).ToArray()),
            TensorElementType.UInt16 => Bytes(data.Select(e => e.GetUInt16()).ToArray()),
            TensorElementType.UInt32 => Bytes(data.Select(e => e.GetUInt32()).ToArray()),
            TensorElementType.UInt64 => Bytes(data.Select(e => e.GetUInt64()).ToArray()),
            TensorElementType.Bool => data.Select(e => e.GetBoolean() ? (byte)1 : (byte)0).ToArray(),
            TensorElementType.String => Protocol.InferRequestReaderTests.EncodeStrings(data.Select(e => e.GetString()!).ToArray()),
            _ => throw new InvalidOperationException(type.ToString()),
        };
    }

    private static byte[] Bytes<T>(T[] values)
        where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>A stream that hides its length, so the client sends the body chunked.</summary>
    private sealed class UnknownLengthStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
