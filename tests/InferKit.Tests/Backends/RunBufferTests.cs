using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Tests.Backends;

/// <summary>
/// Buffers of the backend's own: when the signature fixes every output's shape for a run, ONNX Runtime writes into them
/// instead of allocating (the plan is checked on the first run and dropped whenever ONNX Runtime disagrees, so answers
/// never depend on it); when it fixes every input's shape, inputs are copied into buffers whose values are kept.
/// </summary>
public class RunBufferTests
{
    private const double Tolerance = 1e-4;

    private static TensorSpec Spec(string name, TensorElementType type, params long[] dims) => new(name, type, dims);

    [Fact]
    public void A_plan_needs_every_output_shape_fixed_but_the_batch_axis()
    {
        var input = Spec("x", TensorElementType.Float32, -1, 4);

        var batchable = new ModelSignature([input], [Spec("a", TensorElementType.Float32, -1, 2), Spec("b", TensorElementType.Int64, -1)]);
        var plan = OnnxModelBackend.PlanOutputs(batchable);
        Assert.NotNull(plan);
        Assert.Equal([-1L, 2], plan[0]);
        Assert.Equal([-1L], plan[1]);

        var fixedShapes = new ModelSignature([Spec("x", TensorElementType.Float32, 1, 3)], [Spec("a", TensorElementType.Float32, 1, 512)]);
        Assert.Equal([1L, 512], OnnxModelBackend.PlanOutputs(fixedShapes)![0]);

        // A dynamic dimension other than the batch axis (a sequence length) is not known before the run.
        Assert.Null(OnnxModelBackend.PlanOutputs(new ModelSignature([input], [Spec("a", TensorElementType.Float32, -1, -1, 8)])));

        // Strings have no fixed size; a dynamic first dimension that is not a batch axis is not the run's rows.
        Assert.Null(OnnxModelBackend.PlanOutputs(new ModelSignature([input], [Spec("a", TensorElementType.String, -1, 2)])));
        Assert.Null(OnnxModelBackend.PlanOutputs(batchable.WithoutBatching()));

        // Inputs follow the same rule: a variable-length input (MiniLM's [batch, sequence]) is pinned where it is.
        Assert.Equal([-1L, 4], OnnxModelBackend.PlanInputs(batchable)![0]);
        Assert.Null(OnnxModelBackend.PlanInputs(new ModelSignature([Spec("ids", TensorElementType.Int64, -1, -1)], [Spec("a", TensorElementType.Float32, -1, 2)])));
    }

    [Fact]
    public void After_the_first_run_checks_the_plan_runs_write_into_own_buffers_and_match_the_reference_at_every_size()
    {
        var mlp = new MlpModel(inputSize: 16, hiddenSize: 32, classes: 4, seed: 5);
        using var backend = Create(mlp.ToOnnx());
        Assert.False(backend.PreallocatesOutputs); // not checked yet

        // Sizes seen before reuse the values kept over the buffers (those seen before the buffers last grew are made anew).
        int[] sizes = [3, 1, 64, 7, 200, 2, 3, 64, 1, 3, 2, 64];
        for (int i = 0; i < sizes.Length; i++)
        {
            int rows = sizes[i];
            var input = mlp.CreateInputs(rows, seed: 100 + i);
            var probabilities = mlp.Forward(input, rows, out var logits);
            var sink = new CopySink();
            backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, CancellationToken.None);

            Assert.Equal([rows, 4L], sink.Shapes[0]);
            Assert.Equal([rows, 4L], sink.Shapes[1]);
            OnnxTestServices.AssertClose(logits, sink.Outputs[0], Tolerance, $"logits of {rows} rows");
            OnnxTestServices.AssertClose(probabilities, sink.Outputs[1], Tolerance, $"probabilities of {rows} rows");
            Assert.True(backend.PreallocatesOutputs, $"the plan holds after run {i}");
        }

        // Every run after the checking one used the buffers, including the sizes that made them grow.
        Assert.Equal(sizes.Length - 1, backend.PreallocatedRuns);

        // Inputs larger than a context keeps are pinned where they are; the answer is the same.
        int large = (int)(RunContext.MaxKeptInputBytes / (mlp.InputSize * sizeof(float))) + 10;
        var big = mlp.CreateInputs(large, seed: 9);
        var bigProbabilities = mlp.Forward(big, large, out _);
        var bigSink = new CopySink();
        backend.Run([Tensor.Create(MlpModel.InputName, big, large, mlp.InputSize)], bigSink, CancellationToken.None);
        OnnxTestServices.AssertClose(bigProbabilities, bigSink.Outputs[1], Tolerance, $"probabilities of {large} rows");
    }

    [Fact]
    public void An_identity_output_is_written_into_the_buffers_and_carries_each_runs_own_values()
    {
        var model = new IdentityModel(OnnxElementType.Float, width: 3);
        using var backend = Create(model.ToOnnx());
        for (int run = 0; run < 4; run++)
        {
            int rows = run + 1;
            var input = Enumerable.Range(0, rows * 3).Select(v => (float)(v + (run * 100))).ToArray();
            var sink = new CopySink();
            backend.Run([Tensor.Create(IdentityModel.InputName, input, rows, 3)], sink, CancellationToken.None);
            Assert.Equal(input, sink.Outputs[0]);
        }

        Assert.True(backend.PreallocatesOutputs);
        Assert.Equal(3, backend.PreallocatedRuns);
    }

    [Fact]
    public void An_output_whose_real_shape_differs_from_the_plan_drops_it_and_the_run_still_gets_the_right_answer()
    {
        // y is declared [batch, 4] but keeps only the rows with a positive sum. The first run keeps both of its rows, so
        // the check passes; the next one drops a row, ONNX Runtime refuses its [3, 4] buffer, and an allocating run answers.
        var model = new PositiveRowsModel(width: 4);
        using var backend = Create(model.ToOnnx());

        Check([1, 2, 3, 4, 5, 6, 7, 8], expectedRows: 2);
        Assert.True(backend.PreallocatesOutputs);
        Check([1, 1, 1, 1, -1, -2, -3, -4, 2, 2, 2, 2], expectedRows: 2);
        Assert.False(backend.PreallocatesOutputs);
        Check([3, 3, 3, 3], expectedRows: 1);
        Check([-3, -3, -3, -3], expectedRows: 0);
        Assert.Equal(0, backend.PreallocatedRuns);

        void Check(float[] input, int expectedRows)
        {
            var sink = new CopySink();
            backend.Run([Tensor.Create(PositiveRowsModel.InputName, input, input.Length / 4, 4)], sink, CancellationToken.None);
            Assert.Equal([expectedRows, 4L], sink.Shapes[0]);
            Assert.Equal(model.Forward(input), sink.Outputs[0]);
        }
    }

    [Fact]
    public void A_check_that_fails_on_the_first_run_keeps_allocating_and_answers_right()
    {
        // The first run drops a row: the check's [2, 4] buffer is refused at once, and the plan is never used.
        var model = new PositiveRowsModel(width: 4);
        using var backend = Create(model.ToOnnx());
        float[][] inputs = [[1, 1, 1, 1, -1, -1, -1, -1], [1, 1, 1, 1, 2, 2, 2, 2], [5, 5, 5, 5]];
        foreach (var input in inputs)
        {
            var sink = new CopySink();
            backend.Run([Tensor.Create(PositiveRowsModel.InputName, input, input.Length / 4, 4)], sink, CancellationToken.None);
            Assert.Equal(model.Forward(input), sink.Outputs[0]);
            Assert.False(backend.PreallocatesOutputs);
        }

        Assert.Equal(0, backend.PreallocatedRuns);
    }

    [Fact]
    public void A_graph_input_returned_as_an_output_is_answered_with_each_runs_own_values()
    {
        // An output produced by no node: whatever ONNX Runtime does with a buffer given for it, the answer must be the
        // input itself, run after run. Every row is kept, so the filtered output matches its plan.
        var model = new PositiveRowsModel(width: 2);
        using var backend = Create(model.ToOnnx(passThrough: true));
        for (int run = 0; run < 4; run++)
        {
            float[] input = [run + 1f, run + 2f, run + 3f, run + 4f];
            var sink = new CopySink();
            backend.Run([Tensor.Create(PositiveRowsModel.InputName, input, 2, 2)], sink, CancellationToken.None);
            Assert.Equal(input, sink.Outputs[0]);
            Assert.Equal(input, sink.Outputs[1]);
            Assert.Equal([2L, 2], sink.Shapes[1]);
        }
    }

    private static OnnxModelBackend Create(byte[] onnx)
        => OnnxModelBackend.Create("plan", new OnnxModelData(onnx, null), new OnnxSessionSettings { IntraOpThreads = 1 }, null, null, hostInstances: 1, NullLogger.Instance);
}
