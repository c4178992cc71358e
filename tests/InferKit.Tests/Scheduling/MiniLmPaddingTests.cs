using InferKit.Models;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.Tests.Scheduling;

/// <summary>Variable-length batching on a real model: MiniLM's int64 [batch, sequence] inputs padded to the longest.</summary>
public sealed class MiniLmPaddingTests
{
    private static readonly string[] Sentences =
    [
        "Hi.",
        "The quick brown fox jumps over the lazy dog.",
        "InferKit joins requests of different lengths into one padded batch and cuts the padding away again.",
        "Short one here.",
    ];

    private static InferenceRequest Request(string sentence)
    {
        var t = RealModels.TokenizeMiniLm([sentence]);
        long[] shape = [1, t.SequenceLength];
        return new InferenceRequest(
            Tensor.Create(RealModels.MiniLmInputIds, t.InputIds, shape),
            Tensor.Create(RealModels.MiniLmAttentionMask, t.AttentionMask, shape),
            Tensor.Create(RealModels.MiniLmTokenTypeIds, t.TokenTypeIds, shape));
    }

    [Fact]
    public async Task A_padded_mixed_length_batch_gives_the_embeddings_of_one_request_at_a_time()
    {
        var model = ModelSource.FromBytes(RealModels.MiniLmBytes());
        var services = new ServiceCollection();
        services.AddInferKit()
            .AddOnnxModel("padded", model, o =>
            {
                o.Batching.MaxBatchSize = Sentences.Length;
                o.Batching.MaxQueueDelay = TimeSpan.FromSeconds(30); // dispatch only once all four are queued
                o.Batching.Padding.Enabled = true;
                o.Onnx.IntraOpThreads = 1;
            })
            .AddOnnxModel("single", model, o =>
            {
                o.Batching.Enabled = false;
                o.Onnx.IntraOpThreads = 1;
            });
        await using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IInferenceClient>();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();

        var batched = await Task.WhenAll(Sentences.Select(s => client.InferAsync("padded", Request(s)).AsTask()));
        try
        {
            for (int i = 0; i < Sentences.Length; i++)
            {
                var b = batched[i];
                Assert.True(b.IsSuccess, b.Message);
                Assert.Equal(Sentences.Length, b.BatchSize);
                using var alone = await client.InferAsync("single", Request(Sentences[i]));
                Assert.True(alone.IsSuccess, alone.Message);
                Assert.Equal(1, alone.BatchSize);

                var hiddenBatched = b[RealModels.MiniLmLastHiddenState];
                var hiddenAlone = alone[RealModels.MiniLmLastHiddenState];
                Assert.Equal(hiddenAlone.Shape.ToArray(), hiddenBatched.Shape.ToArray()); // padding cut away
                AssertClose(hiddenAlone.GetSpan<float>(), hiddenBatched.GetSpan<float>());
                AssertClose(alone[RealModels.MiniLmPooled].GetSpan<float>(), b[RealModels.MiniLmPooled].GetSpan<float>());
            }

            // The sentences really had different lengths.
            Assert.Equal(Sentences.Length, batched.Select(static r => r[RealModels.MiniLmLastHiddenState].Shape[1]).Distinct().Count());
        }
        finally
        {
            foreach (var r in batched)
            {
                r.Dispose();
            }
        }
    }

    private static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        }

        Assert.True(worst < 1e-3, $"largest difference {worst}");
    }
}
