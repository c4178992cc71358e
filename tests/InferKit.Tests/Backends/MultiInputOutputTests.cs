using InferKit.Tensors;
using InferKit.TestModels;

namespace InferKit.Tests.Backends;

public sealed class MultiInputOutputTests(SmallModelsFixture fixture) : IClassFixture<SmallModelsFixture>
{
    private static readonly float[] A = [1, 2, 3, 4, 5, 0, 0, 0];
    private static readonly float[] B = [1, 1, 1, -10, 0, 0, 9, 0];

    private IInferenceClient Client => fixture.Services.Client();

    [Fact]
    public async Task All_outputs_come_back_with_their_types_and_shapes_whatever_the_input_order()
    {
        // Inputs given in the opposite order from the signature.
        using var response = await Client.InferAsync(SmallModelsFixture.Multi, new InferenceRequest(
            Tensor.Create(MultiIoModel.InputB, B, 2, 4),
            Tensor.Create(MultiIoModel.InputA, A, 2, 4)));

        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(new[] { MultiIoModel.SumName, MultiIoModel.ProductName, MultiIoModel.ArgMaxName }, response.Outputs.Select(o => o.Name));
        Assert.Equal(new float[] { 2, 3, 4, -6, 5, 0, 9, 0 }, response[MultiIoModel.SumName].ToArray<float>());
        Assert.Equal(new float[] { 1, 2, 3, -40, 0, 0, 0, 0 }, response[MultiIoModel.ProductName].ToArray<float>());
        var argmax = response[MultiIoModel.ArgMaxName];
        Assert.Equal(TensorElementType.Int64, argmax.ElementType);
        Assert.Equal(new long[] { 2 }, argmax.Shape.ToArray());
        Assert.Equal(new long[] { 2, 2 }, argmax.ToArray<long>());
    }

    [Fact]
    public async Task Requested_outputs_limit_the_response_to_that_subset()
    {
        using var response = await Client.InferAsync(SmallModelsFixture.Multi, new InferenceRequest(
            Tensor.Create(MultiIoModel.InputA, A, 2, 4),
            Tensor.Create(MultiIoModel.InputB, B, 2, 4))
        {
            RequestedOutputs = [MultiIoModel.ArgMaxName, MultiIoModel.ProductName],
        });

        Assert.True(response.IsSuccess, response.Message);
        Assert.Equal(
            new[] { MultiIoModel.ArgMaxName, MultiIoModel.ProductName }.Order(StringComparer.Ordinal),
            response.Outputs.Select(o => o.Name).Order(StringComparer.Ordinal));
        Assert.False(response.TryGetOutput(MultiIoModel.SumName, out _));
        Assert.Equal(new long[] { 2, 2 }, response[MultiIoModel.ArgMaxName].ToArray<long>());
        Assert.Equal(new float[] { 1, 2, 3, -40, 0, 0, 0, 0 }, response[MultiIoModel.ProductName].ToArray<float>());
        var missing = Assert.Throws<KeyNotFoundException>(() => response[MultiIoModel.SumName]);
        Assert.Contains(MultiIoModel.SumName, missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_requested_output_is_refused_with_the_list_of_outputs()
    {
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync(SmallModelsFixture.Multi, new InferenceRequest(
            Tensor.Create(MultiIoModel.InputA, A, 2, 4),
            Tensor.Create(MultiIoModel.InputB, B, 2, 4))
        {
            RequestedOutputs = ["difference"],
        }));

        Assert.Equal(SmallModelsFixture.Multi, ex.Model);
        Assert.Contains("'difference'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'sum'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'argmax'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Int64_inputs_with_a_symbolic_sequence_dimension_of_any_length()
    {
        long[] shortIds = [1, 2, 3, 10, 20, 30];
        long[] longIds = [5, 5, 5, 5, 5, 1_000_000];
        var shortTask = Client.InferAsync(SmallModelsFixture.SumIds, new InferenceRequest(Tensor.Create(SumIdsModel.InputName, shortIds, 2, 3))).AsTask();
        var longTask = Client.InferAsync(SmallModelsFixture.SumIds, new InferenceRequest(Tensor.Create(SumIdsModel.InputName, longIds, 1, 6))).AsTask();
        using var shortResponse = await shortTask;
        using var longResponse = await longTask;

        Assert.True(shortResponse.IsSuccess, shortResponse.Message);
        Assert.True(longResponse.IsSuccess, longResponse.Message);
        var total = shortResponse[SumIdsModel.OutputName];
        Assert.Equal(TensorElementType.Float32, total.ElementType);
        Assert.Equal(new long[] { 2 }, total.Shape.ToArray());
        Assert.Equal(SumIdsModel.Reference(shortIds, 2), total.ToArray<float>());
        Assert.Equal(new float[] { 1_000_025 }, longResponse[SumIdsModel.OutputName].ToArray<float>());

        var signature = fixture.Services.Registry().GetModel(SmallModelsFixture.SumIds).Signature!;
        var input = Assert.Single(signature.Inputs);
        Assert.Equal(TensorElementType.Int64, input.ElementType);
        Assert.Equal(new long[] { -1, -1 }, input.Shape);
        Assert.Equal(new[] { "batch", SumIdsModel.SequenceDimension }, input.DimensionNames);
    }

    [Fact]
    public async Task A_fixed_batch_model_is_not_batchable_and_serves_one_row_at_a_time()
    {
        var signature = fixture.Services.Registry().GetModel(SmallModelsFixture.Fixed).Signature!;
        Assert.False(signature.IsBatchable);
        Assert.Equal(new long[] { 1, 4 }, signature.Inputs[0].Shape);

        var requests = Enumerable.Range(0, 4).Select(i => Client.InferAsync(SmallModelsFixture.Fixed,
            new InferenceRequest(Tensor.Create(FixedBatchModel.InputName, new float[] { i, i + 1, i + 2, i + 3 }, 1, 4))).AsTask()).ToArray();
        var responses = await Task.WhenAll(requests);
        for (int i = 0; i < responses.Length; i++)
        {
            using var response = responses[i];
            Assert.True(response.IsSuccess, response.Message);
            Assert.Equal(1, response.BatchSize);
            Assert.Equal(new float[] { 2 * i, 2 * (i + 1), 2 * (i + 2), 2 * (i + 3) }, response[FixedBatchModel.OutputName].ToArray<float>());
        }
    }
}
