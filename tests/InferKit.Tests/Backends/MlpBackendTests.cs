using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Backends;

/// <summary>One provider serving the default MLP (256 → 1024 → 10), shared by the tests of <see cref="MlpBackendTests"/>.</summary>
public sealed class MlpFixture : IAsyncLifetime
{
    public MlpModel Model { get; } = new();

    public ServiceProvider Services { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var bytes = Model.ToOnnx();
        Services = OnnxTestServices.Build(b => b
            .AddOnnxModel("mlp", ModelSource.FromBytes(bytes), o => o.Onnx.IntraOpThreads = 1)
            .AddOnnxModel("mlp-unbatched", ModelSource.FromBytes(bytes), o =>
            {
                o.Batching.Enabled = false;
                o.Onnx.IntraOpThreads = 1;
            }));
        await Services.Registry().LoadAllAsync();
    }

    public async Task DisposeAsync() => await Services.DisposeAsync();
}

public sealed class MlpBackendTests(MlpFixture fixture) : IClassFixture<MlpFixture>
{
    private const double Tolerance = 1e-4;

    private IInferenceClient Client => fixture.Services.Client();

    [Theory]
    [InlineData("mlp", 1)]
    [InlineData("mlp", 2)]
    [InlineData("mlp", 7)]
    [InlineData("mlp", 32)]
    [InlineData("mlp-unbatched", 5)]
    public async Task Outputs_equal_the_CSharp_reference(string model, int rows)
    {
        var mlp = fixture.Model;
        var input = mlp.CreateInputs(rows, seed: 100 + rows);
        var expectedProbabilities = mlp.Forward(input, rows, out var expectedLogits);

        using var response = await Client.InferAsync(model, new InferenceRequest(Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)));

        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(model, response.Model);
        var logits = response[MlpModel.LogitsName];
        var probabilities = response[MlpModel.ProbabilitiesName];
        Assert.Equal(TensorElementType.Float32, logits.ElementType);
        Assert.Equal(new long[] { rows, mlp.Classes }, logits.Shape.ToArray());
        Assert.Equal(new long[] { rows, mlp.Classes }, probabilities.Shape.ToArray());
        OnnxTestServices.AssertClose(expectedLogits, logits.GetSpan<float>(), Tolerance, "logits");
        OnnxTestServices.AssertClose(expectedProbabilities, probabilities.GetSpan<float>(), Tolerance, "probabilities");
    }

    [Fact]
    public async Task Concurrent_requests_each_get_their_own_rows_back()
    {
        var mlp = fixture.Model;
        var rowsPerRequest = new[] { 1, 3, 2, 1, 4, 1, 2, 5, 1, 1, 3, 2 };
        var inputs = rowsPerRequest.Select((rows, i) => mlp.CreateInputs(rows, seed: 1000 + i)).ToArray();

        var responses = await Task.WhenAll(rowsPerRequest.Select((rows, i) =>
            Client.InferAsync("mlp", new InferenceRequest(Tensor.Create(MlpModel.InputName, inputs[i], rows, mlp.InputSize)) { Id = $"r{i}" }).AsTask()));
        try
        {
            for (int i = 0; i < responses.Length; i++)
            {
                var response = responses[i];
                Assert.True(response.IsSuccess, response.Message);
                Assert.Equal($"r{i}", response.RequestId);
                var expected = mlp.Forward(inputs[i], rowsPerRequest[i]);
                var probabilities = response[MlpModel.ProbabilitiesName];
                Assert.Equal(rowsPerRequest[i], probabilities.Shape[0]);
                OnnxTestServices.AssertClose(expected, probabilities.GetSpan<float>(), Tolerance, $"request {i}");
            }
        }
        finally
        {
            foreach (var r in responses)
            {
                r.Dispose();
            }
        }
    }

    [Fact]
    public async Task Outputs_copied_before_dispose_stay_valid_after_it()
    {
        var mlp = fixture.Model;
        var input = mlp.CreateInputs(2, seed: 9);
        float[] copy;
        using (var response = await Client.InferAsync("mlp", new InferenceRequest(Tensor.Create(MlpModel.InputName, input, 2, mlp.InputSize))))
        {
            copy = response[MlpModel.ProbabilitiesName].ToArray<float>();
        }

        // Another request reuses pooled buffers; the copy must not change.
        using (await Client.InferAsync("mlp", new InferenceRequest(Tensor.Create(MlpModel.InputName, mlp.CreateInputs(2, seed: 10), 2, mlp.InputSize))))
        {
        }

        OnnxTestServices.AssertClose(mlp.Forward(input, 2), copy, Tolerance, "copy");
    }

    [Fact]
    public void The_signature_is_read_from_the_session()
    {
        var info = fixture.Services.Registry().GetModel("mlp");

        Assert.Equal(ModelState.Ready, info.State);
        Assert.Equal("onnxruntime", info.Platform);
        Assert.Equal("1", info.Version);
        var signature = info.Signature!;
        Assert.True(signature.IsBatchable);
        var input = Assert.Single(signature.Inputs);
        Assert.Equal(MlpModel.InputName, input.Name);
        Assert.Equal(TensorElementType.Float32, input.ElementType);
        Assert.Equal(new long[] { -1, 256 }, input.Shape);
        Assert.Equal("batch", input.DimensionNames[0]);
        Assert.Null(input.DimensionNames[1]);
        Assert.Equal(new[] { MlpModel.LogitsName, MlpModel.ProbabilitiesName }, signature.Outputs.Select(o => o.Name));
        Assert.All(signature.Outputs, o => Assert.Equal(new long[] { -1, 10 }, o.Shape));
        Assert.Equal(1, signature.IndexOfOutput(MlpModel.ProbabilitiesName));
        Assert.Equal(-1, signature.IndexOfInput("nope"));

        var instance = Assert.Single(info.Instances);
        Assert.Equal("CPU", instance.Provider.Name);
        Assert.Equal("CPU", instance.Provider.Requested);
        Assert.False(instance.Provider.IsFallback);
    }

    [Fact]
    public async Task A_pruned_student_is_served_like_its_teacher_and_matches_its_own_reference()
    {
        var student = fixture.Model.Prune(128);
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel("student", ModelSource.FromBytes(student.ToOnnx())));
        var input = student.CreateInputs(4, seed: 77);

        using var response = await services.Client().InferAsync("student", new InferenceRequest(Tensor.Create(MlpModel.InputName, input, 4, student.InputSize)));

        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(128, student.HiddenSize);
        OnnxTestServices.AssertClose(student.Forward(input, 4), response[MlpModel.ProbabilitiesName].GetSpan<float>(), Tolerance, "student");
    }
}
