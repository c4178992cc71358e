using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using InferKit.Backends;
using InferKit.Tensors;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>
/// Malformed and edge-case inference requests against a real server: each one is answered with a 4xx and a JSON error
/// (never a 500, a hang or an unhandled exception), and a valid request after it still gets the right answer (so a
/// pooled buffer returned twice, or used after its return, would show).
/// </summary>
public sealed class ProtocolFuzzTests
{
    private const string Affine = "/v2/models/affine/infer";
    private const string Valid = """{"id":"ok","inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[-1,-2,-3,-4.5]]}]}""";

    private static Task<KestrelHost> StartAsync(RecordingLog log) =>
        KestrelHost.StartAsync(
            ik =>
            {
                ik.AddModel("affine", _ => new AffineBackend());
                ik.AddModel("f64", _ => new SingleEchoBackend(TensorElementType.Float64));
                ik.AddModel("bytes", _ => new SingleEchoBackend(TensorElementType.String));
            },
            configure: b =>
            {
                b.Logging.AddProvider(log);
                b.Logging.SetMinimumLevel(LogLevel.Warning);
            });

    /// <summary>A valid request on every model still gets exactly the right answer.</summary>
    private static async Task AssertServesAsync(KestrelHost host, string after, List<string> failures)
    {
        var x = new[] { 1f, 2, 3, 4, -1, -2, -3, -4.5f };
        using (var response = await host.PostJsonAsync(Affine, Valid))
        {
            string body = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK)
            {
                failures.Add($"after {after}: a valid request got {(int)response.StatusCode} {body}");
                return;
            }

            using var doc = JsonDocument.Parse(body);
            var y = doc.RootElement.GetProperty("outputs")[0].GetProperty("data").EnumerateArray().Select(e => e.GetSingle()).ToArray();
            if (!y.SequenceEqual(AffineBackend.Expected(x)))
            {
                failures.Add($"after {after}: a valid request got the wrong answer {body}");
            }
        }

        // Binary FP64 input (viewed in place in the request body) and binary BYTES input (pooled strings).
        var doubles = new[] { 0.5, -1e300, 3.25 };
        var raw = new byte[doubles.Length * 8];
        Buffer.BlockCopy(doubles, 0, raw, 0, raw.Length);
        using (var response = await host.PostBinaryAsync("/v2/models/f64/infer", """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""", raw))
        {
            string body = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK || !body.Contains("[0.5,-1E+300,3.25]", StringComparison.Ordinal))
            {
                failures.Add($"after {after}: a valid FP64 request got {(int)response.StatusCode} {body}");
            }
        }

        using (var response = await host.PostJsonAsync("/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["héllo","w"]}]}"""))
        {
            string body = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK || !body.Contains("[\"héllo\",\"w\"]", StringComparison.Ordinal))
            {
                failures.Add($"after {after}: a valid BYTES request got {(int)response.StatusCode} {body}");
            }
        }
    }

    private static async Task SendBadAsync(KestrelHost host, string label, string path, byte[] body, List<string> failures, string? headerLength = null, Action<HttpRequestMessage>? configure = null)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue(headerLength is null ? "application/json" : "application/octet-stream");
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        if (headerLength is not null)
        {
            request.Headers.TryAddWithoutValidation(InferKitHeaders.InferenceHeaderContentLength, headerLength);
        }

        configure?.Invoke(request);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        HttpResponseMessage response;
        try
        {
            response = await host.Client.SendAsync(request, cts.Token);
        }
        catch (Exception ex)
        {
            failures.Add($"{label}: no response ({ex.GetType().Name}: {ex.Message})");
            return;
        }

        using (response)
        {
            int status = (int)response.StatusCode;
            string text = await response.Content.ReadAsStringAsync();
            if (status < 400 || status >= 500)
            {
                failures.Add($"{label}: {status} {text}");
                return;
            }

            try
            {
                using var doc = JsonDocument.Parse(text);
                if (string.IsNullOrWhiteSpace(doc.RootElement.GetProperty("error").GetString()))
                {
                    failures.Add($"{label}: {status} with an empty error");
                }
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                failures.Add($"{label}: {status} without a JSON error: {text}");
            }
        }
    }

    private static Task SendBadAsync(KestrelHost host, string label, string path, string json, List<string> failures) =>
        SendBadAsync(host, label, path, Encoding.UTF8.GetBytes(json), failures);

    private static void AssertNone(List<string> failures, RecordingLog log)
    {
        failures.AddRange(log.Entries);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public async Task A_valid_request_truncated_at_every_byte_is_400_and_the_server_keeps_answering_right()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        var bytes = Encoding.UTF8.GetBytes(Valid);
        for (int n = 0; n < bytes.Length; n++)
        {
            await SendBadAsync(host, $"truncated at {n}", Affine, bytes.AsSpan(0, n).ToArray(), failures);
        }

        await AssertServesAsync(host, "truncations", failures);

        // A binary request whose JSON part or binary part is cut anywhere.
        string header = """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""";
        var json = Encoding.UTF8.GetBytes(header);
        var full = json.Concat(new byte[24]).ToArray();
        for (int n = 0; n < full.Length; n += 3)
        {
            string hl = Math.Min(n, json.Length).ToString(CultureInfo.InvariantCulture);
            await SendBadAsync(host, $"binary truncated at {n}", "/v2/models/f64/infer", full.AsSpan(0, n).ToArray(), failures, hl);
        }

        await AssertServesAsync(host, "binary truncations", failures);
        AssertNone(failures, log);
    }

    public static TheoryData<string, string, string> BadJson() => new()
    {
        // Not an inference request at all.
        { "empty object", Affine, "{}" },
        { "array", Affine, "[]" },
        { "null", Affine, "null" },
        { "number", Affine, "42" },
        { "string", Affine, "\"inputs\"" },
        { "whitespace", Affine, "   " },
        { "trailing garbage", Affine, Valid + "}" },
        { "two objects", Affine, Valid + Valid },
        { "comment", Affine, "/*c*/" + Valid },
        { "inputs not array", Affine, """{"inputs":{"name":"x"}}""" },
        { "inputs string", Affine, """{"inputs":"x"}""" },
        { "inputs null", Affine, """{"inputs":null}""" },
        { "inputs empty", Affine, """{"inputs":[]}""" },
        { "input not object", Affine, """{"inputs":[1]}""" },
        { "input empty object", Affine, """{"inputs":[{}]}""" },
        { "input null", Affine, """{"inputs":[null]}""" },
        { "name number", Affine, """{"inputs":[{"name":1,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "name empty", Affine, """{"inputs":[{"name":"","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "name null", Affine, """{"inputs":[{"name":null,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "name lone surrogate", Affine, """{"inputs":[{"name":"\ud800","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "no name", Affine, """{"inputs":[{"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "no datatype", Affine, """{"inputs":[{"name":"x","shape":[1,4],"data":[1,2,3,4]}]}""" },
        { "no shape", Affine, """{"inputs":[{"name":"x","datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "no data", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32"}]}""" },

        // Datatypes.
        { "datatype unknown", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP33","data":[1,2,3,4]}]}""" },
        { "datatype lower case", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"fp32","data":[1,2,3,4]}]}""" },
        { "datatype number", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":32,"data":[1,2,3,4]}]}""" },
        { "datatype empty", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"","data":[1,2,3,4]}]}""" },
        { "datatype long", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32FP32FP32FP32FP32FP32","data":[1,2,3,4]}]}""" },
        { "datatype lone surrogate", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"\udc00","data":[1,2,3,4]}]}""" },
        { "datatype wrong for model", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]}""" },

        // Shapes.
        { "shape string", Affine, """{"inputs":[{"name":"x","shape":"1,4","datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape null", Affine, """{"inputs":[{"name":"x","shape":null,"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape fraction", Affine, """{"inputs":[{"name":"x","shape":[1,4.5],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape negative", Affine, """{"inputs":[{"name":"x","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape exponent", Affine, """{"inputs":[{"name":"x","shape":[1e0,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape over int64", Affine, """{"inputs":[{"name":"x","shape":[99999999999999999999,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape product overflows", Affine, """{"inputs":[{"name":"x","shape":[4611686018427387904,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape max", Affine, """{"inputs":[{"name":"x","shape":[9223372036854775807,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape huge but fits", Affine, """{"inputs":[{"name":"x","shape":[268435456,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape nested", Affine, """{"inputs":[{"name":"x","shape":[[1],4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "shape zero with huge", Affine, """{"inputs":[{"name":"x","shape":[0,9223372036854775807],"datatype":"FP32","data":[]}]}""" },
        { "shape zero rows", Affine, """{"inputs":[{"name":"x","shape":[0,4],"datatype":"FP32","data":[]}]}""" },
        { "shape scalar", Affine, """{"inputs":[{"name":"x","shape":[],"datatype":"FP32","data":1}]}""" },
        { "shape rank 40", Affine, """{"inputs":[{"name":"x","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },

        // Data.
        { "data short", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}""" },
        { "data long", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}""" },
        { "data null", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":null}]}""" },
        { "data object", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":{"a":1}}]}""" },
        { "data null element", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,null,3,4]}]}""" },
        { "data string element", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,"2",3,4]}]}""" },
        { "data bool element", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,true,3,4]}]}""" },
        { "data object element", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,{},3,4]}]}""" },
        { "data too big for fp32", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,3.5e38,3,4]}]}""" },
        { "data huge exponent", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,1e999999,3,4]}]}""" },
        { "data lone surrogate string", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,"\ud800",3,4]}]}""" },
        { "data deeper", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[[[1,2,3,4,5]]]]}]}""" },
        { "data very deep", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":""" + new string('[', 100) + "1" + new string(']', 100) + "}]}" },
        { "data ragged", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[1,2,3],[4]]}]}""" },
        { "data mixes values and arrays", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,[2,3],4]}]}""" },
        { "bytes ragged", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[3],"datatype":"BYTES","data":[["a","b"],["c"]]}]}""" },
        { "data before shape, short", Affine, """{"inputs":[{"data":[1,2,3],"name":"x","shape":[1,4],"datatype":"FP32"}]}""" },
        { "data before shape, bad", Affine, """{"inputs":[{"data":[1,"a",3,4],"name":"x","shape":[1,4],"datatype":"FP32"}]}""" },
        { "data before shape, huge", Affine, """{"inputs":[{"data":[1,2,3,4],"name":"x","shape":[9223372036854775807],"datatype":"FP32"}]}""" },
        { "data twice", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"data":[1,2]}]}""" },
        { "duplicate input", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "duplicate input, two arrays", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "unknown input", Affine, """{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "extra input", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}""" },
        { "binary size with data", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"parameters":{"binary_data_size":16}}]}""" },
        { "binary size without binary", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}""" },
        { "binary size negative", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":-16}}]}""" },
        { "binary size string", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":"16"}}]}""" },
        { "binary size huge", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":9223372036854775807}}]}""" },
        { "input parameters not object", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"parameters":[]}]}""" },

        // BYTES.
        { "bytes number", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":[1]}]}""" },
        { "bytes null", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":[null]}]}""" },
        { "bytes lone surrogate", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","\ud800"]}]}""" },
        { "bytes short", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[3],"datatype":"BYTES","data":["a","b"]}]}""" },
        { "bytes huge shape", "/v2/models/bytes/infer", """{"inputs":[{"name":"x","shape":[1000000000],"datatype":"BYTES","data":["a","b"]}]}""" },
        { "bytes into fp32", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"BYTES","data":["a","b","c","d"]}]}""" },

        // Outputs.
        { "output unknown", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}""" },
        { "output duplicate", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y"},{"name":"y"}]}""" },
        { "output no name", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{}]}""" },
        { "output name number", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":1}]}""" },
        { "output name lone surrogate", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"\ud800"}]}""" },
        { "outputs object", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":{"name":"y"}}""" },
        { "output not object", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":["y"]}""" },
        { "output binary_data string", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y","parameters":{"binary_data":"true"}}]}""" },
        { "output classification", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y","parameters":{"classification":3}}]}""" },
        { "output parameters array", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y","parameters":[]}]}""" },

        // Request parameters and id.
        { "parameters array", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":[]}""" },
        { "timeout string", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"timeout":"5"}}""" },
        { "timeout negative", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"timeout":-5}}""" },
        { "timeout fraction", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"timeout":1.5}}""" },
        { "timeout huge", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"timeout":1e30}}""" },
        { "priority fraction", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":1.5}}""" },
        { "priority negative", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":-1}}""" },
        { "priority word", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":"urgent"}}""" },
        { "priority lone surrogate", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":"\ud800"}}""" },
        { "priority null", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":null}}""" },
        { "binary_data_output number", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"binary_data_output":1}}""" },
        { "id number", Affine, """{"id":1,"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "id object", Affine, """{"id":{},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "id lone surrogate", Affine, """{"id":"\ud800","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "id bad escape", Affine, """{"id":"\x","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "request property name lone surrogate", Affine, """{"\ud800":1,"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "input property name lone surrogate", Affine, """{"inputs":[{"\ud800":1,"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""" },
        { "output property name lone surrogate", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"y","\udc00":1}]}""" },
        { "parameters property name lone surrogates", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"\ud800\ud800\ud800":1}}""" },
        { "input parameters property name lone surrogates", Affine, """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"\ud800\ud800\ud800":1},"data":[1,2,3,4]}]}""" },
        { "unknown model", "/v2/models/nope/infer", Valid },
        { "unknown version", "/v2/models/affine/versions/9/infer", Valid },
        { "version lone surrogate", "/v2/models/affine/versions/%ED%A0%80/infer", Valid },
        { "model lone surrogate", "/v2/models/%ED%A0%80/infer", Valid },
    };

    [Theory]
    [MemberData(nameof(BadJson))]
    public async Task Bad_json_is_a_4xx_json_error_and_the_server_keeps_answering_right(string label, string path, string json)
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        await SendBadAsync(host, label, path, json, failures);
        await AssertServesAsync(host, label, failures);
        AssertNone(failures, log);
    }

    public static TheoryData<string, string, byte[]> BadUtf8() => new()
    {
        { "id", Affine, Utf8("{\"id\":\"a", [0xFF, 0xFE], "b\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}") },
        { "input name", Affine, Utf8("{\"inputs\":[{\"name\":\"x", [0xC3], "\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}") },
        { "datatype", Affine, Utf8("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP", [0xFF], "\",\"data\":[1,2,3,4]}]}") },
        { "bytes data", "/v2/models/bytes/infer", Utf8("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"a", [0xED, 0xA0, 0x80], "\"]}]}") },
        { "output name", Affine, Utf8("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}],\"outputs\":[{\"name\":\"y", [0x80], "\"}]}") },
        { "priority", Affine, Utf8("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}],\"parameters\":{\"priority\":\"hi", [0xFF], "\"}}") },
        { "fp32 element string", Affine, Utf8("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,\"", [0xFF], "\"]}]}") },
    };

    private static byte[] Utf8(string before, byte[] raw, string after) =>
        [.. Encoding.UTF8.GetBytes(before), .. raw, .. Encoding.UTF8.GetBytes(after)];

    [Theory]
    [MemberData(nameof(BadUtf8))]
    public async Task Invalid_utf8_in_a_json_string_is_a_4xx_json_error(string label, string path, byte[] body)
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        await SendBadAsync(host, label, path, body, failures);
        await AssertServesAsync(host, label, failures);
        AssertNone(failures, log);
    }

    [Fact]
    public async Task Binary_bodies_that_lie_about_their_lengths_are_4xx_and_the_server_keeps_answering_right()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        const string F64 = "/v2/models/f64/infer";
        const string Bytes = "/v2/models/bytes/infer";
        string header = """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""";
        var json = Encoding.UTF8.GetBytes(header);
        byte[] Body(string h, int binary) => [.. Encoding.UTF8.GetBytes(h), .. new byte[binary]];
        string Len(string h) => Encoding.UTF8.GetByteCount(h).ToString(CultureInfo.InvariantCulture);

        foreach (string hl in new[] { "-1", "abc", "", " 5", "5 ", "+5", "1e3", "0x10", "99999999999999999999", "2147483648", "0", "1", (json.Length - 1).ToString(CultureInfo.InvariantCulture), (json.Length + 1).ToString(CultureInfo.InvariantCulture), (json.Length + 24).ToString(CultureInfo.InvariantCulture), "100000", $"{json.Length}, {json.Length}" })
        {
            await SendBadAsync(host, $"header length '{hl}'", F64, Body(header, 24), failures, hl);
        }

        // Two header values.
        await SendBadAsync(host, "two header lengths", F64, Body(header, 24), failures, null, r => r.Headers.TryAddWithoutValidation(InferKitHeaders.InferenceHeaderContentLength, [json.Length.ToString(CultureInfo.InvariantCulture), json.Length.ToString(CultureInfo.InvariantCulture)]));

        foreach (int binary in new[] { 0, 8, 23, 25, 48 })
        {
            await SendBadAsync(host, $"binary part of {binary} bytes for 24", F64, Body(header, binary), failures, Len(header));
        }

        foreach (string h in new[]
        {
            """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":16}}]}""",
            """{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":23}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":24.0}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":null}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":24}},{"name":"x","shape":[3],"datatype":"FP64","parameters":{"binary_data_size":0}}]}""",
            """{"inputs":[{"name":"x","shape":[-3],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[3,4611686018427387904],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[2305843009213693955],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[4611686018427387907],"datatype":"FP64","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"BYTES","parameters":{"binary_data_size":24}}]}""",
            """{"inputs":[{"name":"x","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":24}}]}""",
        })
        {
            await SendBadAsync(host, $"binary '{h}'", F64, Body(h, 24), failures, Len(h));
        }

        // BYTES in binary: lengths that run past the end, invalid UTF-8, leftovers, huge counts.
        string bh(long shape, int size) => "{\"inputs\":[{\"name\":\"x\",\"shape\":[" + shape.ToString(CultureInfo.InvariantCulture) + "],\"datatype\":\"BYTES\",\"parameters\":{\"binary_data_size\":" + size.ToString(CultureInfo.InvariantCulture) + "}}]}";
        foreach (var (shape, data) in new (long, byte[])[]
        {
            (1, [5, 0, 0, 0, (byte)'a']),
            (1, [0xFF, 0xFF, 0xFF, 0xFF, (byte)'a']),
            (1, [0, 0, 0, 0x80, (byte)'a']),
            (1, [1, 0, 0, 0, 0xFF]),
            (1, [1, 0, 0, 0, (byte)'a', 0]),
            (2, [1, 0, 0, 0, (byte)'a']),
            (2, [1, 0, 0, 0, (byte)'a', 1, 0]),
            (1, [1, 0, 0]),
            (1, []),
            (1_000_000_000, [0, 0, 0, 0]),
            (4611686018427387904, [0, 0, 0, 0]),
        })
        {
            string h = bh(shape, data.Length);
            await SendBadAsync(host, $"binary BYTES [{shape}] {Convert.ToHexString(data)}", Bytes, [.. Encoding.UTF8.GetBytes(h), .. data], failures, Len(h));
        }

        await AssertServesAsync(host, "binary lies", failures);
        AssertNone(failures, log);
    }

    [Fact]
    public async Task Bad_headers_are_400_and_odd_but_valid_values_are_served()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        var body = Encoding.UTF8.GetBytes(Valid);
        foreach (var (name, value) in new[]
        {
            (InferKitHeaders.TimeoutMs, "abc"), (InferKitHeaders.TimeoutMs, "0"), (InferKitHeaders.TimeoutMs, "-5"),
            (InferKitHeaders.TimeoutMs, "99999999999999999999"), (InferKitHeaders.TimeoutMs, "922337203685478"), (InferKitHeaders.TimeoutMs, "1.5"),
            (InferKitHeaders.Priority, "urgent"), (InferKitHeaders.Priority, "1.5"), (InferKitHeaders.Priority, "-1"), (InferKitHeaders.Priority, ""),
        })
        {
            await SendBadAsync(host, $"header {name}: '{value}'", Affine, body, failures, null, r => r.Headers.TryAddWithoutValidation(name, value));
        }

        // Valid extremes: the largest timeouts and any id are served and the id comes back as sent.
        foreach (var (label, json, id, header) in new (string, string, string?, (string, string)?)[]
        {
            ("max timeout parameter", """{"id":"t","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"timeout":9223372036854775807}}""", "t", null),
            ("max timeout header", """{"id":"t","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", "t", (InferKitHeaders.TimeoutMs, "922337203685477")),
            ("priority critical", """{"id":"t","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":{"priority":"critical"}}""", "t", (InferKitHeaders.Priority, "CRITICAL")),
            ("control characters in id", """{"id":"a\u0000b\u001f\n\"\\","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", "a\0b\u001f\n\"\\", null),
            ("unicode id", """{"id":"日本語🙂\u2028<>&'","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", "日本語🙂\u2028<>&'", null),
            ("escaped datatype", """{"id":"t","inputs":[{"name":"x","shape":[1,4],"datatype":"FP\u0033\u0032","data":[1,2,3,4]}]}""", "t", null),
            ("escaped names", """{"\u0069d":"t","\u0069nputs":[{"n\u0061me":"\u0078","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""", "t", null),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, Affine) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
            if (header is { } h)
            {
                request.Headers.TryAddWithoutValidation(h.Item1, h.Item2);
            }

            using var response = await host.Client.SendAsync(request);
            string text = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.OK)
            {
                failures.Add($"{label}: {(int)response.StatusCode} {text}");
                continue;
            }

            using var doc = JsonDocument.Parse(text);
            string? echoed = doc.RootElement.TryGetProperty("id", out var e) ? e.GetString() : null;
            if (echoed != id)
            {
                failures.Add($"{label}: id came back as '{echoed}', not '{id}'");
            }
        }

        await AssertServesAsync(host, "headers", failures);
        AssertNone(failures, log);
    }

    [Fact]
    public async Task Raw_connections_that_lie_or_go_away_mid_body_leave_the_server_serving()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        var address = host.Client.BaseAddress!;
        var valid = Encoding.UTF8.GetBytes(Valid);

        async Task<string> RawAsync(string head, byte[] body, bool close)
        {
            using var client = new TcpClient();
            await client.ConnectAsync(address.Host, address.Port);
            var stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
            await stream.WriteAsync(body);
            await stream.FlushAsync();
            if (close)
            {
                client.Client.Shutdown(SocketShutdown.Send);
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var buffer = new byte[4096];
            var all = new MemoryStream();
            try
            {
                int n;
                while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0)
                {
                    all.Write(buffer, 0, n);
                    if (!close && Encoding.ASCII.GetString(all.ToArray()).Contains("\r\n\r\n", StringComparison.Ordinal))
                    {
                        break;
                    }
                }
            }
            catch (IOException)
            {
            }

            return Encoding.UTF8.GetString(all.ToArray());
        }

        string Head(string length, string extra = "") =>
            $"POST {Affine} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length}{extra}\r\n";

        // Content-Length beyond the limit with a small body: refused at once.
        string over = await RawAsync(Head("Content-Length: 100000000\r\n"), valid, close: false);
        if (!over.StartsWith("HTTP/1.1 413", StringComparison.Ordinal))
        {
            failures.Add($"declared 100000000 bytes: {over}");
        }

        // The body ends (the client shuts down its side) before Content-Length bytes arrived.
        foreach (int cut in new[] { 0, 1, valid.Length / 2, valid.Length - 1 })
        {
            _ = await RawAsync(Head($"Content-Length: {valid.Length}\r\n"), valid.AsSpan(0, cut).ToArray(), close: true);
        }

        // A chunked body with a malformed chunk, and one cut mid-chunk.
        string badChunk = await RawAsync(Head("Transfer-Encoding: chunked\r\n"), Encoding.ASCII.GetBytes("zz\r\n{}\r\n0\r\n\r\n"), close: false);
        if (!badChunk.StartsWith("HTTP/1.1 400", StringComparison.Ordinal))
        {
            failures.Add($"malformed chunk: {badChunk}");
        }

        _ = await RawAsync(Head("Transfer-Encoding: chunked\r\n"), Encoding.ASCII.GetBytes("100\r\n{\"inputs\""), close: true);

        await AssertServesAsync(host, "raw connections", failures);
        AssertNone(failures, log);
    }

    [Fact]
    public async Task Random_mutations_of_valid_requests_never_get_a_5xx()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new List<string>();
        var random = new Random(20260101);
        string binaryHeader = """{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":12}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}""";
        var bases = new (string Path, byte[] Body, int? HeaderLength)[]
        {
            (Affine, Encoding.UTF8.GetBytes(Valid), null),
            (Affine, Encoding.UTF8.GetBytes("""{"id":"m","parameters":{"timeout":5000000,"priority":"high","binary_data_output":true},"outputs":[{"name":"total"}],"inputs":[{"data":[1,2,3,4],"name":"x","datatype":"FP32","shape":[1,4]}]}"""), null),
            ("/v2/models/bytes/infer", Encoding.UTF8.GetBytes(binaryHeader).Concat(Protocol.InferRequestReaderTests.EncodeStrings(["abc", "de"])).ToArray(), Encoding.UTF8.GetByteCount(binaryHeader)),
        };
        const string Tokens = "{}[]\",:-0123456789.eE \\untrfals\u0000\u00ff";
        for (int i = 0; i < 300; i++)
        {
            var (path, original, headerLength) = bases[i % bases.Length];
            var body = original.ToList();
            for (int m = random.Next(1, 4); m > 0 && body.Count > 0; m--)
            {
                int at = random.Next(body.Count);
                switch (random.Next(4))
                {
                    case 0: body[at] = (byte)Tokens[random.Next(Tokens.Length)]; break;
                    case 1: body.Insert(at, (byte)Tokens[random.Next(Tokens.Length)]); break;
                    case 2: body.RemoveAt(at); break;
                    default: body[at] = (byte)random.Next(256); break;
                }
            }

            int? hl = headerLength is { } h ? Math.Min(h + (body.Count - original.Length), body.Count) : null;
            var content = new ByteArrayContent(body.ToArray());
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
            if (hl is { } l)
            {
                request.Headers.Add(InferKitHeaders.InferenceHeaderContentLength, Math.Max(0, l).ToString(CultureInfo.InvariantCulture));
            }

            using var response = await host.Client.SendAsync(request);
            if ((int)response.StatusCode >= 500)
            {
                failures.Add($"mutation {i} of {path}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()} for {Convert.ToBase64String(body.ToArray())}");
            }
        }

        await AssertServesAsync(host, "mutations", failures);
        AssertNone(failures, log);
    }

    [Fact]
    public async Task Bad_and_good_requests_interleaved_concurrently_each_get_their_own_answer()
    {
        var log = new RecordingLog(LogLevel.Error);
        await using var host = await StartAsync(log);
        var failures = new ConcurrentQueue<string>();
        var bad = new[]
        {
            """{"inputs":[{"name":"x","shape":[3],"datatype":"BYTES","data":["a","b"]}]}""",
            """{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","\ud800"]}]}""",
            """{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}""",
            """{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}],"outputs":[{"name":"nope"}]}""",
        };

        async Task WorkerAsync(int worker)
        {
            for (int i = 0; i < 25; i++)
            {
                string tag = $"w{worker}-{i}-" + new string((char)('a' + (i % 26)), i % 7);
                double value = (worker * 1000) + i + 0.5;
                var raw = BitConverter.GetBytes(value).Concat(BitConverter.GetBytes(-value)).ToArray();
                var f64 = host.PostBinaryAsync("/v2/models/f64/infer", """{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}""", raw);
                var strings = host.PostJsonAsync("/v2/models/bytes/infer", $$"""{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["{{tag}}","{{tag}}!"]}]}""");
                var wrong = host.PostJsonAsync(i % 2 == 0 ? "/v2/models/bytes/infer" : Affine, bad[(worker + i) % bad.Length]);
                using (var r = await f64)
                {
                    var (doc, binary) = await KestrelHost.SplitAsync(r);
                    doc.Dispose();
                    if (r.StatusCode != HttpStatusCode.OK || !binary.SequenceEqual(raw))
                    {
                        failures.Enqueue($"{tag}: FP64 echo {(int)r.StatusCode} {Convert.ToHexString(binary)} for {Convert.ToHexString(raw)}");
                    }
                }

                using (var r = await strings)
                {
                    string text = await r.Content.ReadAsStringAsync();
                    if (r.StatusCode != HttpStatusCode.OK || !text.Contains($"[\"{tag}\",\"{tag}!\"]", StringComparison.Ordinal))
                    {
                        failures.Enqueue($"{tag}: BYTES echo {(int)r.StatusCode} {text}");
                    }
                }

                using (var r = await wrong)
                {
                    if (r.StatusCode != HttpStatusCode.BadRequest)
                    {
                        failures.Enqueue($"{tag}: bad request answered {(int)r.StatusCode}");
                    }
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 6).Select(w => Task.Run(() => WorkerAsync(w))));
        var list = failures.ToList();
        await AssertServesAsync(host, "concurrent traffic", list);
        AssertNone(list, log);
    }

    /// <summary>One input "x" of one element type and any length, echoed to "y"; not batchable.</summary>
    private sealed class SingleEchoBackend(TensorElementType type) : IModelBackend
    {
        public ModelSignature Signature { get; } = new([new TensorSpec("x", type, [-1])], [new TensorSpec("y", type, [-1])], isBatchable: false);

        public ExecutionProviderInfo Provider => ExecutionProviderInfo.Cpu;

        public void Run(ReadOnlySpan<Tensor> inputs, IBackendOutputSink sink, CancellationToken cancellationToken)
        {
            if (inputs[0].ElementType == TensorElementType.String)
            {
                sink.OnStringOutput(0, inputs[0].Shape, inputs[0].GetStrings());
            }
            else
            {
                sink.OnOutput(0, inputs[0].ElementType, inputs[0].Shape, inputs[0].Bytes);
            }
        }

        public void Dispose()
        {
        }
    }
}
