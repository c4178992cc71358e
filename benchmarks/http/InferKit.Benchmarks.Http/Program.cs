using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using InferKit;
using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Ort = Microsoft.ML.OnnxRuntime;

// One host, three endpoints, the same request JSON:
//   POST /v2/models/fraud/infer   InferKit (batching scheduler, pooled protocol reader/writer)
//   POST /naive/infer             System.Text.Json + one session.Run per request: what one writes by hand
//   POST /constant/infer          System.Text.Json parse, constant answer, no inference: the HTTP ceiling
// and two that split InferKit's cost against the constant endpoint (run.sh BREAKDOWN=1):
//   POST /breakdown/hop           the constant endpoint plus a wait that a dedicated thread ends, for every request
//                                 waiting, in one pass: the price of handing a request to another thread and back
//   POST /breakdown/scheduler     the constant endpoint plus InferKit's scheduler and the model (the answer is dropped):
//                                 what the scheduler costs beyond the hop, without InferKit's protocol reader and writer
// and GET /breakdown/batches: "BATCHES ROWS" InferKit's model has run so far, for run.sh's rows-per-batch column.
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
int threads = builder.Configuration.GetValue("IntraOpThreads", 1);
int maxBatch = builder.Configuration.GetValue("MaxBatchSize", 64);

// Many connections send at once: let requests queue and join batches instead of running alone on the caller's
// thread whenever the instance happens to be idle (BatchingOptions.AllowInlineExecution; --Inline true to compare).
bool inline = builder.Configuration.GetValue("Inline", false);

// BatchingOptions.MaxQueueDelay in microseconds (default 0: run what is queued at once, do not wait for more).
int delayUs = builder.Configuration.GetValue("MaxQueueDelayUs", 0);
var mlp = new MlpModel(inputSize: 32, hiddenSize: 64, classes: 2, seed: 2024);
var onnx = mlp.ToOnnx();

builder.Services.AddInferKit().AddOnnxModel("fraud", ModelSource.FromBytes(onnx), o =>
{
    o.Batching.MaxBatchSize = maxBatch;
    o.Onnx.IntraOpThreads = threads;
    o.Batching.AllowInlineExecution = inline;
    o.Batching.MaxQueueDelay = TimeSpan.FromMicroseconds(delayUs);
});

using var sessionOptions = new Ort.SessionOptions { IntraOpNumThreads = threads, GraphOptimizationLevel = Ort.GraphOptimizationLevel.ORT_ENABLE_ALL };
using var session = new Ort.InferenceSession(onnx, sessionOptions);
var app = builder.Build();
app.MapInferKit();

string[] inputNames = [MlpModel.InputName];
string[] outputNames = [MlpModel.LogitsName, MlpModel.ProbabilitiesName];
app.MapPost("/naive/infer", async (HttpContext http) =>
{
    var request = await JsonSerializer.DeserializeAsync(http.Request.Body, BenchJson.Default.KServeRequest, http.RequestAborted);
    var input = request!.Inputs[0];
    using var value = Ort.OrtValue.CreateTensorValueFromMemory(input.Data, input.Shape);
    using var runOptions = new Ort.RunOptions();
    using var results = session.Run(runOptions, inputNames, [value], outputNames);
    var response = new KServeResponse { ModelName = "fraud", ModelVersion = "1", Id = request.Id };
    for (int i = 0; i < outputNames.Length; i++)
    {
        var info = results[i].GetTensorTypeAndShape();
        response.Outputs.Add(new KServeTensor
        {
            Name = outputNames[i],
            Datatype = "FP32",
            Shape = info.Shape,
            Data = results[i].GetTensorDataAsSpan<float>().ToArray(),
        });
    }

    http.Response.ContentType = "application/json";
    await JsonSerializer.SerializeAsync(http.Response.Body, response, BenchJson.Default.KServeResponse, http.RequestAborted);
});

var constant = JsonSerializer.SerializeToUtf8Bytes(new KServeResponse
{
    ModelName = "fraud",
    ModelVersion = "1",
    Outputs =
    {
        new KServeTensor { Name = MlpModel.LogitsName, Datatype = "FP32", Shape = [1, 2], Data = [0.25f, -0.25f] },
        new KServeTensor { Name = MlpModel.ProbabilitiesName, Datatype = "FP32", Shape = [1, 2], Data = [0.62245935f, 0.37754068f] },
    },
}, BenchJson.Default.KServeResponse);
app.MapPost("/constant/infer", async (HttpContext http) =>
{
    var request = await JsonSerializer.DeserializeAsync(http.Request.Body, BenchJson.Default.KServeRequest, http.RequestAborted);
    if (request is null || request.Inputs.Count == 0)
    {
        http.Response.StatusCode = 400;
        return;
    }

    http.Response.ContentType = "application/json";
    http.Response.ContentLength = constant.Length;
    await http.Response.Body.WriteAsync(constant, http.RequestAborted);
});

using var completer = new Completer();
app.MapPost("/breakdown/hop", async (HttpContext http) =>
{
    var request = await JsonSerializer.DeserializeAsync(http.Request.Body, BenchJson.Default.KServeRequest, http.RequestAborted);
    if (request is null || request.Inputs.Count == 0)
    {
        http.Response.StatusCode = 400;
        return;
    }

    await completer.Wait();
    http.Response.ContentType = "application/json";
    http.Response.ContentLength = constant.Length;
    await http.Response.Body.WriteAsync(constant, http.RequestAborted);
});

var client = app.Services.GetRequiredService<IInferenceClient>();
app.MapPost("/breakdown/scheduler", async (HttpContext http) =>
{
    var request = await JsonSerializer.DeserializeAsync(http.Request.Body, BenchJson.Default.KServeRequest, http.RequestAborted);
    if (request is null || request.Inputs.Count == 0)
    {
        http.Response.StatusCode = 400;
        return;
    }

    var input = request.Inputs[0];
    var inference = new InferenceRequest(Tensor.Create(MlpModel.InputName, input.Data, 1, input.Data.Length)) { AllowSynchronousContinuation = true };
    using (var answer = await client.InferAsync("fraud", inference, http.RequestAborted))
    {
        if (!answer.IsSuccess)
        {
            http.Response.StatusCode = 503;
            return;
        }
    }

    http.Response.ContentType = "application/json";
    http.Response.ContentLength = constant.Length;
    await http.Response.Body.WriteAsync(constant, http.RequestAborted);
});

// Batches and rows the model has run so far (from InferKit's own per-batch instrument): run.sh reads it around each
// InferKit round to report how full the batches were.
var batchCounter = new BatchCounter();
app.MapGet("/breakdown/batches", () => Results.Text(batchCounter.Text, "text/plain"));

await app.RunAsync();
batchCounter.Dispose();

/// <summary>Counts InferKit's batches and their rows, from the "inferkit.batch.size" histogram.</summary>
internal sealed class BatchCounter : IDisposable
{
    private readonly System.Diagnostics.Metrics.MeterListener _listener = new();
    private long _batches;
    private long _rows;

    public BatchCounter()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == InferKit.Telemetry.InferKitTelemetry.Name && instrument.Name == "inferkit.batch.size")
            {
                listener.EnableMeasurementEvents(instrument, this);
            }
        };
        _listener.SetMeasurementEventCallback<int>(static (_, rows, _, state) =>
        {
            var self = (BatchCounter)state!;
            Interlocked.Increment(ref self._batches);
            Interlocked.Add(ref self._rows, rows);
        });
        _listener.Start();
    }

    /// <summary>"BATCHES ROWS".</summary>
    public string Text => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Interlocked.Read(ref _batches)} {Interlocked.Read(ref _rows)}");

    public void Dispose() => _listener.Dispose();
}

/// <summary>
/// A dedicated thread that ends every wait queued since its last pass, running each waiter's continuation on itself, as
/// InferKit's batch thread answers a batch's callers.
/// </summary>
internal sealed class Completer : IDisposable
{
    private readonly ConcurrentQueue<TaskCompletionSource> _waiting = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _thread;
    private volatile bool _stopped;

    public Completer()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "breakdown completer" };
        _thread.Start();
    }

    public void Dispose()
    {
        _stopped = true;
        _signal.Release();
        _thread.Join();
        _signal.Dispose();
    }

    public Task Wait()
    {
        var waiter = new TaskCompletionSource();
        _waiting.Enqueue(waiter);
        _signal.Release();
        return waiter.Task;
    }

    private void Loop()
    {
        var pass = new List<TaskCompletionSource>();
        while (!_stopped)
        {
            _signal.Wait();
            while (_waiting.TryDequeue(out var waiter))
            {
                pass.Add(waiter);
            }

            foreach (var waiter in pass)
            {
                waiter.SetResult();
            }

            pass.Clear();
        }

        while (_waiting.TryDequeue(out var left))
        {
            left.SetResult();
        }
    }
}

internal sealed class KServeRequest
{
    [JsonPropertyName("id")]
    public string? Id { get; set; }

    [JsonPropertyName("inputs")]
    public List<KServeTensor> Inputs { get; set; } = [];
}

internal sealed class KServeResponse
{
    [JsonPropertyName("model_name")]
    public string ModelName { get; set; } = "";

    [JsonPropertyName("model_version")]
    public string ModelVersion { get; set; } = "";

    [JsonPropertyName("id")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Id { get; set; }

    [JsonPropertyName("outputs")]
    public List<KServeTensor> Outputs { get; } = [];
}

internal sealed class KServeTensor
{
    [JsonPropertyName("name")]
    public string Name { get; set; } = "";

    [JsonPropertyName("shape")]
    public long[] Shape { get; set; } = [];

    [JsonPropertyName("datatype")]
    public string Datatype { get; set; } = "";

    [JsonPropertyName("data")]
    public float[] Data { get; set; } = [];
}

[JsonSerializable(typeof(KServeRequest))]
[JsonSerializable(typeof(KServeResponse))]
internal sealed partial class BenchJson : JsonSerializerContext;
