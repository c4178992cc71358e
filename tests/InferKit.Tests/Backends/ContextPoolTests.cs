using InferKit.Backends.Onnx;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Tests.Backends;

/// <summary>
/// A run hands its pooled context (run options, values kept over its buffers) back when it ends; a backend disposed
/// meanwhile must release that context rather than keep it in a pool nobody empties again.
/// </summary>
public sealed class ContextPoolTests
{
    private const double Tolerance = 1e-4;

    [Fact]
    public void A_context_handed_back_as_the_backend_is_disposed_is_released_not_pooled()
    {
        // The backend is disposed after the run checked that it was not, just before the context goes back to the pool:
        // the context is added after Dispose returned. It once stayed there, its run options and kept values never
        // released; now the run, leaving last, empties the pool.
        var mlp = new MlpModel(inputSize: 8, hiddenSize: 16, classes: 3, seed: 11);
        var backend = OnnxModelBackend.Create("dispose", new OnnxModelData(mlp.ToOnnx(), null), new OnnxSessionSettings { IntraOpThreads = 1 }, null, null, hostInstances: 1, NullLogger.Instance);
        RunContext? handedBack = null;
        backend.BeforeContextPooled = context =>
        {
            handedBack = context;
            backend.Dispose();
            Assert.Equal(0, backend.PooledContexts);
        };

        const int rows = 3;
        var input = mlp.CreateInputs(rows, seed: 21);
        var probabilities = mlp.Forward(input, rows, out var logits);
        var sink = new CopySink();
        using var cts = new CancellationTokenSource();
        backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, cts.Token);

        // The run's answer is whole; the context it handed back is released, and nothing is left in the pool.
        OnnxTestServices.AssertClose(logits, sink.Outputs[0], Tolerance, "logits");
        OnnxTestServices.AssertClose(probabilities, sink.Outputs[1], Tolerance, "probabilities");
        Assert.NotNull(handedBack);
        Assert.True(handedBack.Options.IsClosed, "the handed-back context's run options were not released");
        Assert.Empty(handedBack.InputValueCache);
        Assert.Empty(handedBack.OutputValueCache);
        Assert.Equal(0, backend.PooledContexts);
        Assert.Throws<ObjectDisposedException>(() => backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], new CopySink(), CancellationToken.None));
    }

    [Fact]
    public void A_context_handed_back_while_the_backend_lives_is_pooled_and_released_by_dispose()
    {
        var mlp = new MlpModel(inputSize: 8, hiddenSize: 16, classes: 3, seed: 12);
        var backend = OnnxModelBackend.Create("pool", new OnnxModelData(mlp.ToOnnx(), null), new OnnxSessionSettings { IntraOpThreads = 1 }, null, null, hostInstances: 1, NullLogger.Instance);
        RunContext? handedBack = null;
        backend.BeforeContextPooled = context => handedBack = context;
        const int rows = 2;
        var input = mlp.CreateInputs(rows, seed: 22);
        backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], new CopySink(), CancellationToken.None);

        Assert.NotNull(handedBack);
        Assert.Equal(1, backend.PooledContexts);
        Assert.False(handedBack.Options.IsClosed);

        backend.Dispose();

        Assert.Equal(0, backend.PooledContexts);
        Assert.True(handedBack.Options.IsClosed);
    }
}
