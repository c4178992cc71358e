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

    [Fact]
    public async Task Output_data_that_does_not_fill_its_shape_fails_the_run_instead_of_answering_a_malformed_tensor()
    {
        // A backend bug: 4 bytes (1 float) for an output of shape [2,2].
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("x", TensorElementType.Float32, [-1, 2], ["batch", null])],
                [new TensorSpec("y", TensorElementType.Float32, [-1, 2], ["batch", null])]),
            static (inputs, sink) => sink.OnOutput(0, TensorElementType.Float32, inputs[0].Shape, new byte[4]));
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.WarmupRuns = 0);
        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => host.Send(new InferenceRequest(Tensor.Create("x", new float[4], 2, 2))));
        Assert.Contains("output 'y'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[2,2]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("4 bytes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_padded_output_that_comes_back_without_its_padded_axis_runs_each_request_alone()
    {
        // The signature says y [batch, sequence], which padding cuts back per request; the backend returns y [batch]. The
        // joined batch cannot be cut back; each request runs again alone, unpadded, and gets what the model returns for it.
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("ids", TensorElementType.Int64, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("y", TensorElementType.Int64, [-1, -1], ["batch", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, TensorElementType.Int64, inputs[0].Shape[..1], new byte[inputs[0].Shape[0] * sizeof(long)]));
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.Batching.Padding.Enabled = true, JoinDelay);
        var a = host.Send(new InferenceRequest(Tensor.Create("ids", new long[2], 1, 2)));
        var b = host.Send(new InferenceRequest(Tensor.Create("ids", new long[3], 1, 3)));
        host.Time.Advance(JoinDelay);
        foreach (var t in new[] { a, b })
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal([1L], r["y"].Shape.ToArray());
        }

        Assert.Equal(["ids: Int64[2,3]", "ids: Int64[1,2]", "ids: Int64[1,3]"], backend.Runs);
    }

    [Fact]
    public async Task Two_axes_of_one_input_that_share_a_dimension_name_must_agree()
    {
        // An attention bias [batch, sequence, sequence]: a 2×3 one is not one, and joined with others its output would be
        // cut back to 2×2 (both output axes follow the first input axis named "sequence").
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("bias", TensorElementType.Float32, [-1, -1, -1], ["batch", "sequence", "sequence"])],
                [new TensorSpec("y", TensorElementType.Float32, [-1, -1, -1], ["batch", "sequence", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, TensorElementType.Float32, inputs[0].Shape, inputs[0].RawBytes));
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.Batching.Padding.Enabled = true);
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(() => host.Send(new InferenceRequest(Tensor.Create("bias", new float[6], 1, 2, 3))));
        Assert.Equal("bias", ex.Input);
        Assert.Contains("'sequence'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("axis 1 is 2, axis 2 is 3", ex.Message, StringComparison.Ordinal);

        using var square = await host.Send(new InferenceRequest(Tensor.Create("bias", new float[9], 1, 3, 3)));
        Assert.True(square.IsSuccess, square.Message);
    }

    /// <summary>input_ids, attention_mask: Int64 [batch, ?] (the sequence axis unnamed, as some exports leave it) → tokens = Σ mask [batch].</summary>
    private static ScriptedBackend UnnamedTokens() => new(
        new ModelSignature(
            [
                new TensorSpec("input_ids", TensorElementType.Int64, [-1, -1], ["batch", null]),
                new TensorSpec("attention_mask", TensorElementType.Int64, [-1, -1], ["batch", null]),
            ],
            [new TensorSpec("tokens", TensorElementType.Int64, [-1], ["batch"])]),
        static (inputs, sink) =>
        {
            var mask = inputs[1].GetSpan<long>();
            long rows = inputs[1].Shape[0];
            var tokens = new long[rows];
            for (int i = 0; i < mask.Length; i++)
            {
                tokens[i / (int)inputs[1].Shape[1]] += mask[i];
            }

            sink.OnOutput(0, TensorElementType.Int64, [rows], System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens.AsSpan()));
        });

    private static InferenceRequest UnnamedTokens(int ids, int mask) => new(
        Tensor.Create("input_ids", new long[ids], 1, ids),
        Tensor.Create("attention_mask", Enumerable.Repeat(1L, mask).ToArray(), 1, mask));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task With_padding_a_request_whose_unnamed_padded_axes_disagree_runs_alone_as_it_came(bool mismatchedFirst)
    {
        // input_ids' and attention_mask's unnamed axis 1 may be one axis, or two unrelated ones: the model does not say. A
        // request of 7 ids and a mask of 5 used to be joined: its mask was padded to 7, which the model read as "the last
        // two tokens are padding", an answer the request did not ask for. Now it runs alone, as it came, whether it heads
        // the queue or comes after requests that agree with themselves; those still join.
        var backend = UnnamedTokens();
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.Batching.Padding.Enabled = true, JoinDelay);

        var mismatched = mismatchedFirst ? host.Send(UnnamedTokens(ids: 7, mask: 5)) : null;
        var seven = host.Send(UnnamedTokens(ids: 7, mask: 7));
        var five = host.Send(UnnamedTokens(ids: 5, mask: 5));
        mismatched ??= host.Send(UnnamedTokens(ids: 7, mask: 5));
        host.Time.Advance(JoinDelay);

        // Tokens = the sum of each request's own mask: 5 for the mismatched one, not padded to anything.
        foreach (var (task, tokens) in new[] { (mismatched, 5L), (seven, 7L), (five, 5L) })
        {
            using var r = await task;
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal([tokens], r["tokens"].ToArray<long>());
        }

        const string Alone = "input_ids: Int64[1,7] attention_mask: Int64[1,5]";
        const string Joined = "input_ids: Int64[2,7] attention_mask: Int64[2,7]";
        Assert.Equal(mismatchedFirst ? [Alone, Joined] : [Joined, Alone], backend.Runs);
    }

    [Fact]
    public async Task Without_padding_unnamed_axes_of_two_inputs_are_not_tied()
    {
        // Nothing pads them, so InferKit does not decide they are one axis: the model gets the request as it came.
        var backend = UnnamedTokens();
        await using var host = await ScriptedBackend.StartAsync(backend);
        using var r = await host.Send(UnnamedTokens(ids: 7, mask: 5));
        Assert.True(r.IsSuccess, r.Message);
        Assert.Equal(["input_ids: Int64[1,7] attention_mask: Int64[1,5]"], backend.Runs);
    }

    /// <summary>
    /// ids, mask: Int64 [batch, sequence] → echo = 100·ids + mask [batch, sequence] and length = Σ mask [batch]; the
    /// joined inputs of every run are kept.
    /// </summary>
    private static ScriptedBackend Tokens(List<(long[] Ids, long[] Mask)> joined) => new(
        new ModelSignature(
            [
                new TensorSpec("ids", TensorElementType.Int64, [-1, -1], ["batch", "sequence"]),
                new TensorSpec("mask", TensorElementType.Int64, [-1, -1], ["batch", "sequence"]),
            ],
            [
                new TensorSpec("echo", TensorElementType.Int64, [-1, -1], ["batch", "sequence"]),
                new TensorSpec("length", TensorElementType.Int64, [-1], ["batch"]),
            ]),
        (inputs, sink) =>
        {
            var ids = inputs[0].GetSpan<long>();
            var mask = inputs[1].GetSpan<long>();
            long rows = inputs[0].Shape[0];
            int sequence = (int)inputs[0].Shape[1];
            joined.Add((ids.ToArray(), mask.ToArray()));
            var echo = new long[ids.Length];
            var length = new long[rows];
            for (int i = 0; i < ids.Length; i++)
            {
                echo[i] = (100 * ids[i]) + mask[i];
                length[i / sequence] += mask[i];
            }

            sink.OnOutput(0, TensorElementType.Int64, inputs[0].Shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(echo.AsSpan()));
            sink.OnOutput(1, TensorElementType.Int64, [rows], System.Runtime.InteropServices.MemoryMarshal.AsBytes(length.AsSpan()));
        });

    /// <summary><paramref name="rows"/> rows of <paramref name="length"/> tokens: ids first, first + 1, …; mask all 1.</summary>
    private static InferenceRequest Tokens(int rows, int length, long first)
    {
        var ids = new long[rows * length];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = first + i;
        }

        return new InferenceRequest(Tensor.Create("ids", ids, rows, length), Tensor.Create("mask", Enumerable.Repeat(1L, ids.Length).ToArray(), rows, length));
    }

    [Fact]
    public async Task Padding_joins_requests_of_several_rows_and_lengths_with_each_inputs_pad_value_and_cuts_every_answer_back()
    {
        var joined = new List<(long[] Ids, long[] Mask)>();
        await using var host = await ScriptedBackend.StartAsync(Tokens(joined), o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.PadValues["ids"] = 7; // the mask pads with 0
        }, JoinDelay);
        joined.Clear();
        var two = host.Send(Tokens(2, 2, 10)); // 2 rows of 2
        var longest = host.Send(Tokens(1, 3, 20));
        var none = host.Send(Tokens(1, 0, 0)); // an empty sequence
        host.Time.Advance(JoinDelay);

        using (var r = await two)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(4, r.BatchSize);
            Assert.Equal(new long[] { 2, 2 }, r["echo"].Shape.ToArray());
            Assert.Equal(new long[] { 1001, 1101, 1201, 1301 }, r["echo"].ToArray<long>());
            Assert.Equal(new long[] { 2, 2 }, r["length"].ToArray<long>());
        }

        using (var r = await longest)
        {
            Assert.Equal(new long[] { 2001, 2101, 2201 }, r["echo"].ToArray<long>());
            Assert.Equal(new long[] { 3 }, r["length"].ToArray<long>());
        }

        using (var r = await none)
        {
            Assert.Equal(new long[] { 1, 0 }, r["echo"].Shape.ToArray());
            Assert.Equal(new long[] { 0 }, r["length"].ToArray<long>());
        }

        var (ids, mask) = Assert.Single(joined);
        Assert.Equal(new long[] { 10, 11, 7, 12, 13, 7, 20, 21, 22, 7, 7, 7 }, ids);
        Assert.Equal(new long[] { 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0 }, mask);
    }

    [Theory]
    [InlineData(TensorElementType.Int64, 0.5)]
    [InlineData(TensorElementType.UInt8, 256)]
    [InlineData(TensorElementType.Int32, 3e9)]
    [InlineData(TensorElementType.Bool, 2)]
    [InlineData(TensorElementType.Float16, 1e6)]
    [InlineData(TensorElementType.Int64, double.NaN)]
    [InlineData(TensorElementType.String, 0)]
    public async Task A_pad_value_the_input_cannot_hold_fails_the_load_instead_of_padding_with_another(TensorElementType type, double pad)
    {
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("ids", type, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("y", type, [-1, -1], ["batch", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, inputs[0].ElementType, inputs[0].Shape, inputs[0].RawBytes));
        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => ScriptedBackend.StartAsync(backend, o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.PadValues["ids"] = pad;
        }));
        Assert.Contains("PadValues['ids']", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"input 'ids' ({type})", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_pad_value_out_of_an_integer_inputs_range_is_refused_with_the_range()
    {
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("ids", TensorElementType.UInt8, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("y", TensorElementType.UInt8, [-1, -1], ["batch", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, inputs[0].ElementType, inputs[0].Shape, inputs[0].RawBytes));
        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => ScriptedBackend.StartAsync(backend, o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.PadValues["ids"] = -1;
        }));
        Assert.Contains("PadValues['ids'] = -1 does not fit input 'ids' (UInt8): a UInt8 input pads with a whole number from 0 to 255.", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(TensorElementType.Int64, -9e18)]
    [InlineData(TensorElementType.UInt8, 255)]
    [InlineData(TensorElementType.Bool, 1)]
    [InlineData(TensorElementType.Float16, double.NegativeInfinity)]
    [InlineData(TensorElementType.Float32, double.NaN)]
    public async Task A_pad_value_the_input_holds_is_accepted(TensorElementType type, double pad)
    {
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("ids", type, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("y", type, [-1, -1], ["batch", "sequence"])]),
            static (inputs, sink) => sink.OnOutput(0, inputs[0].ElementType, inputs[0].Shape, inputs[0].RawBytes));
        await using var host = await ScriptedBackend.StartAsync(backend, o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.PadValues["ids"] = pad;
        });
    }

    [Fact]
    public async Task A_batch_whose_output_is_not_batched_runs_each_request_alone_without_taking_a_healthy_instance_out_of_rotation()
    {
        // y is declared [batch, 2] but holds only the rows whose first value is positive (as ONNX Compress would): a
        // joined batch cannot be split, yet the instance is fine, and each request alone is answered.
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("x", TensorElementType.Float32, [-1, 2], ["batch", null])],
                [new TensorSpec("y", TensorElementType.Float32, [-1, 2], ["batch", null])]),
            static (inputs, sink) =>
            {
                var x = inputs[0].GetSpan<float>();
                var kept = new List<float>();
                for (int r = 0; r < x.Length / 2; r++)
                {
                    if (x[r * 2] > 0)
                    {
                        kept.Add(x[r * 2]);
                        kept.Add(x[(r * 2) + 1]);
                    }
                }

                var y = kept.ToArray();
                sink.OnOutput(0, TensorElementType.Float32, [y.Length / 2, 2], System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan()));
            });
        await using var host = await ScriptedBackend.StartAsync(backend, o =>
        {
            o.Instances = 2;
            o.Health.FailureThreshold = 1;
        }, JoinDelay);
        var positive = host.Send(new InferenceRequest(Tensor.Create("x", new float[] { 1, 2 }, 1, 2)));
        var negative = host.Send(new InferenceRequest(Tensor.Create("x", new float[] { -1, 2 }, 1, 2)));
        host.Time.Advance(JoinDelay);
        using (var r = await positive)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(new float[] { 1, 2 }, r["y"].ToArray<float>());
        }

        using (var r = await negative)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal([0L, 2L], r["y"].Shape.ToArray()); // alone, its one row was dropped by the model itself
        }

        // The joined run (not retried on the other instance, which could not split it either), then each request alone.
        Assert.Equal(["x: Float32[2,2]", "x: Float32[1,2]", "x: Float32[1,2]"], backend.Runs);

        var alone = host.Send(new InferenceRequest(Tensor.Create("x", new float[] { 3, 4 }, 1, 2)));
        host.Time.Advance(JoinDelay);
        using var single = await alone;
        Assert.True(single.IsSuccess, single.Message);
        Assert.Equal(new float[] { 3, 4 }, single["y"].ToArray<float>());
    }

    [Fact]
    public async Task Requests_whose_padded_batch_would_exceed_one_buffer_run_apart()
    {
        // One request of 2^18 × 1024 floats (1 GiB, never touched) and one of 1 × 1024: padded into one batch, each input
        // row would be 1 GiB and two rows do not fit one buffer. The backend reads only the shapes.
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("x", TensorElementType.Float32, [-1, -1, 1024], ["batch", "sequence", null])],
                [new TensorSpec("rows", TensorElementType.Float32, [-1], ["batch"])]),
            static (inputs, sink) => sink.OnOutput(0, TensorElementType.Float32, inputs[0].Shape[..1], new byte[inputs[0].Shape[0] * sizeof(float)]));
        await using var host = await ScriptedBackend.StartAsync(backend, o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.MaxPaddedLength = 1 << 18;
        }, JoinDelay);
        var large = host.Send(new InferenceRequest(Tensor.Create("x", GC.AllocateUninitializedArray<float>(1 << 28), 1, 1 << 18, 1024)));
        var small = host.Send(new InferenceRequest(Tensor.Create("x", new float[1024], 1, 1, 1024)));
        host.Time.Advance(JoinDelay);
        foreach (var t in new[] { large, small })
        {
            using var r = await t;
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(1, r.BatchSize);
        }

        Assert.Equal(["x: Float32[1,262144,1024]", "x: Float32[1,1,1024]"], backend.Runs);
    }

    [Fact]
    public async Task A_sequence_longer_than_MaxPaddedLength_is_refused_and_one_at_the_limit_is_served()
    {
        await using var host = await ScriptedBackend.StartAsync(Tokens([]), o =>
        {
            o.Batching.Padding.Enabled = true;
            o.Batching.Padding.MaxPaddedLength = 4;
        });
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(() => host.Send(Tokens(1, 5, 1)));
        Assert.Equal("ids", ex.Input);
        Assert.Contains("dimension 1 is 5, longer than the padding limit 4", ex.Message, StringComparison.Ordinal);

        using var r = await host.Send(Tokens(1, 4, 1));
        Assert.True(r.IsSuccess, r.Message);
    }

    [Fact]
    public async Task String_inputs_pad_with_empty_strings_and_every_caller_gets_its_own_strings_back()
    {
        var joined = new List<string[]>();
        var backend = new ScriptedBackend(
            new ModelSignature(
                [new TensorSpec("text", TensorElementType.String, [-1, -1], ["batch", "sequence"])],
                [new TensorSpec("echo", TensorElementType.String, [-1, -1], ["batch", "sequence"])]),
            (inputs, sink) =>
            {
                joined.Add(inputs[0].ToArray<string>());
                sink.OnStringOutput(0, inputs[0].Shape, inputs[0].GetStrings());
            });
        await using var host = await ScriptedBackend.StartAsync(backend, o => o.Batching.Padding.Enabled = true, JoinDelay);
        joined.Clear();
        var two = host.Send(new InferenceRequest(Tensor.Create("text", new[] { "a", "b", "c", "d" }, 2, 2)));
        var longest = host.Send(new InferenceRequest(Tensor.Create("text", new[] { "x", "y", "z" }, 1, 3)));
        var none = host.Send(new InferenceRequest(Tensor.Create("text", Array.Empty<string>(), 1, 0)));
        host.Time.Advance(JoinDelay);

        using (var r = await two)
        {
            Assert.Equal(new long[] { 2, 2 }, r["echo"].Shape.ToArray());
            Assert.Equal(["a", "b", "c", "d"], r["echo"].ToArray<string>());
        }

        using (var r = await longest)
        {
            Assert.Equal(["x", "y", "z"], r["echo"].ToArray<string>());
        }

        using (var r = await none)
        {
            Assert.Equal(new long[] { 1, 0 }, r["echo"].Shape.ToArray());
        }

        Assert.Equal(["a", "b", "", "c", "d", "", "x", "y", "z", "", "", ""], Assert.Single(joined));
    }
}
