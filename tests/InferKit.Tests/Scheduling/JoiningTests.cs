using InferKit.Backends;
using InferKit.Tensors;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// How requests are checked against a signature, joined along axis 0 (padded where asked) and cut apart again, on
/// scripted backends: every caller gets exactly its own rows, and a request that does not fit is refused on its own.
/// </summary>
public sealed class JoiningTests
{
    private static readonly TimeSpan JoinDelay = TimeSpan.FromMilliseconds(10);

    /// <summary>x: Int64 [batch, n] → y = x, n dynamic and unnamed.</summary>
    private static ScriptedBackend Echo() => new(
        new ModelSignature(
            [new TensorSpec("x", TensorElementType.Int64, [-1, -1], ["batch", null])],
            [new TensorSpec("y", TensorElementType.Int64, [-1, -1], ["batch", null])]),
        static (inputs, sink) => sink.OnOutput(0, inputs[0].ElementType, inputs[0].Shape, inputs[0].RawBytes));

    [Fact]
    public async Task A_request_with_more_rows_than_an_int_holds_is_refused_naming_the_input()
    {
        // A shape with a 0 dimension holds no data however many rows it claims.
        await using var host = await ScriptedBackend.StartAsync(Echo());
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(() => host.Send(new InferenceRequest(Tensor.Create("x", Array.Empty<long>(), 3_000_000_000, 0))));
        Assert.Equal("m", ex.Model);
        Assert.Equal("x", ex.Input);
        Assert.Contains("3000000000 rows", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"at most {int.MaxValue}", ex.Message, StringComparison.Ordinal);

        using var good = await host.Send(new InferenceRequest(Tensor.Create("x", new long[] { 5, 6 }, 1, 2)));
        Assert.Equal(new long[] { 5, 6 }, good["y"].ToArray<long>());
    }

    [Fact]
    public async Task A_request_of_int_MaxValue_rows_is_not_joined_to_another_and_both_get_their_own_answer()
    {
        // Both fit the batch cap only if the row sum wraps around: they must run apart.
        var backend = Echo();
        await using var host = await ScriptedBackend.StartAsync(backend, joinDelay: JoinDelay);
        var one = host.Send(new InferenceRequest(Tensor.Create("x", Array.Empty<long>(), 1, 0)));
        var huge = host.Send(new InferenceRequest(Tensor.Create("x", Array.Empty<long>(), int.MaxValue, 0)));
        host.Time.Advance(JoinDelay);

        using (var r = await one)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(new long[] { 1, 0 }, r["y"].Shape.ToArray());
        }

        using (var r = await huge)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(new long[] { int.MaxValue, 0 }, r["y"].Shape.ToArray());
        }

        Assert.Equal(["x: Int64[1,0]", $"x: Int64[{int.MaxValue},0]"], backend.Runs);
    }
}
