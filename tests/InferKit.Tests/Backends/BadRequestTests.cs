using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Backends;

/// <summary>Each request that does not fit the signature gets an error naming the model, the input, what was expected and what came.</summary>
public sealed class BadRequestTests(SmallModelsFixture fixture) : IClassFixture<SmallModelsFixture>
{
    private const string Multi = SmallModelsFixture.Multi;

    private IInferenceClient Client => fixture.Services.Client();

    private static Tensor A(int rows = 2) => Tensor.Create(MultiIoModel.InputA, new float[rows * 4], rows, 4);

    private static Tensor B(int rows = 2) => Tensor.Create(MultiIoModel.InputB, new float[rows * 4], rows, 4);

    [Fact]
    public async Task Unknown_model()
    {
        var ex = await Assert.ThrowsAsync<ModelNotFoundException>(async () => await Client.InferAsync("mutli", new InferenceRequest(A(), B())));
        Assert.Equal("mutli", ex.Model);
        Assert.Null(ex.Version);
        Assert.Contains("'mutli'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(Multi, ex.Message, StringComparison.Ordinal); // lists the known models
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Unknown_version()
    {
        var ex = await Assert.ThrowsAsync<ModelNotFoundException>(async () => await Client.InferAsync(Multi, "7", new InferenceRequest(A(), B())));
        Assert.Equal(Multi, ex.Model);
        Assert.Equal("7", ex.Version);
        Assert.Contains("'7'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("1", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Missing_input()
    {
        var ex = await AssertInvalid(new InferenceRequest(A()), MultiIoModel.InputB);
        Assert.Contains("missing", ex.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Float32[?,4]", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Extra_input()
    {
        var ex = await AssertInvalid(new InferenceRequest(A(), B(), Tensor.Create("c", new float[8], 2, 4)), "c");
        Assert.Contains("'c'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'a'", ex.Message, StringComparison.Ordinal); // what the model takes
        Assert.Contains("'b'", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Input_given_twice()
    {
        var ex = await AssertInvalid(new InferenceRequest(A(), B(), A()), MultiIoModel.InputA);
        Assert.Contains("more than once", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Wrong_element_type()
    {
        var ex = await AssertInvalid(new InferenceRequest(A(), Tensor.Create(MultiIoModel.InputB, new double[8], 2, 4)), MultiIoModel.InputB);
        Assert.Contains("Float32", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Float64", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Wrong_rank()
    {
        var ex = await AssertInvalid(new InferenceRequest(Tensor.Create(MultiIoModel.InputA, new float[8], 2, 2, 2), B()), MultiIoModel.InputA);
        Assert.Contains("rank 2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("rank 3", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[?,4]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[2,2,2]", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Fixed_dimension_mismatch()
    {
        var ex = await AssertInvalid(new InferenceRequest(Tensor.Create(MultiIoModel.InputA, new float[10], 2, 5), B()), MultiIoModel.InputA);
        Assert.Contains("[?,4]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[2,5]", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Fixed_batch_dimension_mismatch()
    {
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync(SmallModelsFixture.Fixed,
            new InferenceRequest(Tensor.Create(FixedBatchModel.InputName, new float[8], 2, 4))));
        Assert.Equal(SmallModelsFixture.Fixed, ex.Model);
        Assert.Equal(FixedBatchModel.InputName, ex.Input);
        Assert.Contains($"'{SmallModelsFixture.Fixed}'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[1,4]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[2,4]", ex.Message, StringComparison.Ordinal);

        using var good = await Client.InferAsync(SmallModelsFixture.Fixed, new InferenceRequest(Tensor.Create(FixedBatchModel.InputName, new float[] { 1, 2, 3, 4 }, 1, 4)));
        Assert.True(good.IsSuccess, good.Message);
    }

    [Fact]
    public async Task Inputs_that_disagree_on_the_batch_dimension()
    {
        var ex = await AssertInvalid(new InferenceRequest(A(2), B(3)), MultiIoModel.InputB);
        Assert.Contains("'a'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("3", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Zero_rows()
    {
        var ex = await AssertInvalid(new InferenceRequest(A(0), B(0)), MultiIoModel.InputA);
        Assert.Contains("0 rows", ex.Message, StringComparison.Ordinal);
        await AssertGoodRequestSucceeds();
    }

    [Fact]
    public async Task Without_a_batch_axis_inputs_must_still_agree_on_a_named_first_dimension()
    {
        // a and b are both [batch, 4]. With AxisZeroIsBatch = false axis 0 is no batch axis, but it is still one dimension
        // named "batch": a [1,4] with b [3,4] does not fit the model. ONNX Runtime does not check symbolic dimensions and
        // Add broadcasts a over b, which answered sum [3,4] for a request the model cannot take.
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel("unbatched", ModelSource.FromBytes(new MultiIoModel(4).ToOnnx()), o =>
        {
            o.Onnx.IntraOpThreads = 1;
            o.AxisZeroIsBatch = false;
        }));
        var client = services.Client();
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await client.InferAsync("unbatched", new InferenceRequest(A(1), B(3))));
        Assert.Equal(MultiIoModel.InputB, ex.Input);
        Assert.Contains("'batch'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("1 vs 3", ex.Message, StringComparison.Ordinal);

        using var good = await client.InferAsync("unbatched", new InferenceRequest(A(3), B(3)));
        Assert.True(good.IsSuccess, good.Message);
        Assert.Equal(new long[] { 3, 4 }, good[MultiIoModel.SumName].Shape.ToArray());
    }

    [Fact]
    public async Task The_exception_is_an_ArgumentException_so_hosts_can_map_it_to_400()
    {
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync(Multi, new InferenceRequest(A())));
        Assert.IsAssignableFrom<ArgumentException>(ex);
    }

    private async Task<InvalidInferenceRequestException> AssertInvalid(InferenceRequest request, string input)
    {
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync(Multi, request));
        Assert.Equal(Multi, ex.Model);
        Assert.Equal(input, ex.Input);
        Assert.Contains($"'{Multi}'", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"'{input}'", ex.Message, StringComparison.Ordinal);
        return ex;
    }

    private async Task AssertGoodRequestSucceeds()
    {
        var a = new float[] { 1, 2, 3, 4 };
        var b = new float[] { 4, 3, 2, 1 };
        using var response = await Client.InferAsync(Multi, new InferenceRequest(Tensor.Create(MultiIoModel.InputA, a, 1, 4), Tensor.Create(MultiIoModel.InputB, b, 1, 4)));
        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(new float[] { 5, 5, 5, 5 }, response[MultiIoModel.SumName].ToArray<float>());
    }
}
