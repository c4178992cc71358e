using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Tests.Backends;

/// <summary>
/// A run's token is wired to its pooled run options' Terminate flag, which ONNX Runtime never clears by itself: run
/// options whose flag was set must not serve a later run, which would stop at once.
/// </summary>
public class RunCancellationTests
{
    private const double Tolerance = 1e-4;

    [Fact]
    public void A_token_cancelled_after_the_run_produced_its_outputs_leaves_no_terminated_run_options_for_the_next_run()
    {
        // The sink cancels the token while the run hands over its outputs: the run itself has ended, so nothing throws and
        // the caller has its answer, but the cancellation callback has set Terminate on the run's options. One intra-op
        // thread and runs one after another: every run takes the one pooled context, if it went back to the pool.
        var mlp = new MlpModel(inputSize: 8, hiddenSize: 16, classes: 3, seed: 11);
        using var backend = OnnxModelBackend.Create("cancel", new OnnxModelData(mlp.ToOnnx(), null), new OnnxSessionSettings { IntraOpThreads = 1 }, null, null, hostInstances: 1, NullLogger.Instance);

        // 1. The first run lets ONNX Runtime allocate, then checks the output plan with a second run on the same options
        //    (that check is stopped by the flag and skipped); 3. a run on the checked plan writes into the context's own
        //    buffers. After each, a plain run must succeed.
        for (int step = 0; step < 4; step++)
        {
            bool cancelling = step % 2 == 0;
            const int rows = 3;
            var input = mlp.CreateInputs(rows, seed: 40 + step);
            var probabilities = mlp.Forward(input, rows, out var logits);
            using var cts = new CancellationTokenSource();
            var sink = new CancellingSink(cancelling ? cts : null);
            backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, cancelling ? cts.Token : CancellationToken.None);

            Assert.Equal(cancelling, cts.IsCancellationRequested);
            OnnxTestServices.AssertClose(logits, sink.Inner.Outputs[0], Tolerance, $"logits of step {step}");
            OnnxTestServices.AssertClose(probabilities, sink.Inner.Outputs[1], Tolerance, $"probabilities of step {step}");
            if (step == 1)
            {
                // The check stopped at step 0 ran again here, so step 2 runs on the plan.
                Assert.True(backend.PreallocatesOutputs);
            }
        }

        Assert.Equal(2, backend.PreallocatedRuns);
    }

    /// <summary>Copies the outputs and cancels a token when the first one arrives.</summary>
    private sealed class CancellingSink(CancellationTokenSource? cancel) : IBackendOutputSink
    {
        public CopySink Inner { get; } = new();

        public void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data)
        {
            cancel?.Cancel();
            Inner.OnOutput(outputIndex, elementType, shape, data);
        }

        public void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data)
            => Inner.OnStringOutput(outputIndex, shape, data);
    }
}
