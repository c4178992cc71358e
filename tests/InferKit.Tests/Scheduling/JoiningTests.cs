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

    /// <summary>x: Float32 [batch] → 66 outputs o0 … o65, each a copy of x.</summary>
    private static ScriptedBackend Wide() => new(
        new ModelSignature(
            [new TensorSpec("x", TensorElementType.Float32, [-1], ["batch"])],
            Enumerable.Range(0, 66).Select(static o => new TensorSpec($"o{o}", TensorElementType.Float32, [-1], ["batch"])).ToArray()),
        static (inputs, sink) =>
        {
            for (int o = 0; o < 66; o++)
            {
                sink.OnOutput(o, TensorElementType.Float32, inputs[0].Shape, inputs[0].RawBytes);
            }
        });

    private static InferenceRequest Row(float value, params string[] outputs) => new(Tensor.Create("x", new[] { value }, 1)) { RequestedOutputs = outputs };

    [Fact]
    public async Task On_a_model_with_more_than_64_outputs_each_request_gets_exactly_the_outputs_it_asked_for()
    {
        var backend = Wide();
        await using var host = await ScriptedBackend.StartAsync(backend, joinDelay: JoinDelay);
        var low = host.Send(Row(1, "o1"));
        var high = host.Send(Row(2, "o65", "o3", "o65"));
        var all = host.Send(Row(3));
        host.Time.Advance(JoinDelay);

        using (var r = await low)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(["o1"], r.Outputs.Select(static o => o.Name));
            Assert.Equal([1f], r["o1"].ToArray<float>());
        }

        using (var r = await high)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(["o3", "o65"], r.Outputs.Select(static o => o.Name));
            Assert.Equal([2f], r["o65"].ToArray<float>());
        }

        using (var r = await all)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(66, r.Outputs.Count);
            Assert.Equal([3f], r["o64"].ToArray<float>());
        }

        Assert.Equal(["x: Float32[3]"], backend.Runs);

        // Alone in its batch, too.
        var lone = host.Send(Row(4, "o64"));
        host.Time.Advance(JoinDelay);
        using (var r = await lone)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(["o64"], r.Outputs.Select(static o => o.Name));
        }
    }

    [Fact]
    public async Task An_unknown_requested_output_is_refused_even_when_listed_after_an_output_past_the_64th()
    {
        await using var host = await ScriptedBackend.StartAsync(Wide());
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(() => host.Send(Row(1, "o65", "o66")));
        Assert.Equal("m", ex.Model);
        Assert.Contains("'o66'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'o65' Float32[?]", ex.Message, StringComparison.Ordinal); // what the model returns
    }
}
