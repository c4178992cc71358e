using Onnx;
using static InferKit.TestModels.OnnxBuilder;

namespace InferKit.TestModels;

/// <summary>
/// A two-layer perceptron classifier with deterministic weights, as an ONNX model and as a C# reference:
/// <c>input</c> float [batch, inputSize] → MatMul+Add → Relu → MatMul+Add → <c>logits</c> float [batch, classes]
/// and <c>probabilities</c> = Softmax(logits, axis -1) float [batch, classes].
/// </summary>
/// <remarks>
/// Weights are He-uniform (W1 in ±√(6/inputSize), W2 in ±√(6/hidden)) and biases in ±0.1. Each row of W2 (a hidden
/// unit's outgoing weights) is then scaled by a log-normal importance (σ = 1.5) and W2 is rescaled to a mean square of
/// 4× He's, so that, like in a trained network, a minority of hidden units carries most of the signal, and for inputs
/// uniform in [-1, 1] (<see cref="CreateInputs"/>) the logits have a standard deviation near 1.6: the softmax is spread
/// (top probability mostly 0.2 to 0.7), never saturated. With the default sizes, <c>Prune(128)</c> (8× cheaper) agrees
/// with the teacher on about 77% of rows and on about 99% of the rows where its own top probability exceeds 0.5.
/// Matrices are row-major: <see cref="W1"/> is [inputSize, hidden], <see cref="W2"/> is [hidden, classes].
/// </remarks>
public sealed class MlpModel
{
    /// <summary>Name of the graph input.</summary>
    public const string InputName = "input";

    /// <summary>Name of the logits output.</summary>
    public const string LogitsName = "logits";

    /// <summary>Name of the probabilities output.</summary>
    public const string ProbabilitiesName = "probabilities";

    /// <summary>Input width used by the benchmarks.</summary>
    public const int DefaultInputSize = 256;

    /// <summary>Hidden width used by the benchmarks.</summary>
    public const int DefaultHiddenSize = 1024;

    /// <summary>Number of classes used by the benchmarks.</summary>
    public const int DefaultClasses = 10;

    private readonly float[] _w1;
    private readonly float[] _b1;
    private readonly float[] _w2;
    private readonly float[] _b2;

    /// <summary>Creates an MLP whose weights are drawn deterministically from <paramref name="seed"/>.</summary>
    /// <param name="inputSize">Width of the input.</param>
    /// <param name="hiddenSize">Number of hidden units.</param>
    /// <param name="classes">Number of classes.</param>
    /// <param name="seed">Seed of the weights: the same seed gives the same model.</param>
    /// <param name="importanceSigma">Spread (log-normal σ) of the hidden units' importance: larger makes a pruned student closer to the teacher.</param>
    /// <param name="logitGain">Scale of the logits: larger makes the softmax more confident.</param>
    public MlpModel(int inputSize = DefaultInputSize, int hiddenSize = DefaultHiddenSize, int classes = DefaultClasses, int seed = 42,
        double importanceSigma = DefaultImportanceSigma, double logitGain = DefaultLogitGain)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(hiddenSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classes, 1);
        InputSize = inputSize;
        HiddenSize = hiddenSize;
        Classes = classes;
        var random = new Random(seed);
        _w1 = Uniform(random, inputSize * hiddenSize, Math.Sqrt(6.0 / inputSize));
        _b1 = Uniform(random, hiddenSize, 0.1);
        _w2 = Uniform(random, hiddenSize * classes, Math.Sqrt(6.0 / hiddenSize));
        _b2 = Uniform(random, classes, 0.1);
        ScaleOutgoingRows(random, _w2, hiddenSize, classes, importanceSigma, logitGain);
    }

    private MlpModel(int inputSize, int hiddenSize, int classes, float[] w1, float[] b1, float[] w2, float[] b2)
    {
        InputSize = inputSize;
        HiddenSize = hiddenSize;
        Classes = classes;
        _w1 = w1;
        _b1 = b1;
        _w2 = w2;
        _b2 = b2;
    }

    /// <summary>Width of the input.</summary>
    public int InputSize { get; }

    /// <summary>Number of hidden units.</summary>
    public int HiddenSize { get; }

    /// <summary>Number of classes (width of both outputs).</summary>
    public int Classes { get; }

    /// <summary>First layer weights, row-major [InputSize, HiddenSize].</summary>
    public ReadOnlyMemory<float> W1 => _w1;

    /// <summary>First layer bias [HiddenSize].</summary>
    public ReadOnlyMemory<float> B1 => _b1;

    /// <summary>Second layer weights, row-major [HiddenSize, Classes].</summary>
    public ReadOnlyMemory<float> W2 => _w2;

    /// <summary>Second layer bias [Classes].</summary>
    public ReadOnlyMemory<float> B2 => _b2;

    /// <summary>Number of multiply-adds per row, a measure of the model's cost.</summary>
    public long MultiplyAddsPerRow => ((long)InputSize * HiddenSize) + ((long)HiddenSize * Classes);

    /// <summary>Serializes the model as ONNX (IR 8, opset 17, batch dimension named "batch").</summary>
    /// <returns>The model file's bytes.</returns>
    public byte[] ToOnnx()
    {
        var graph = Graph("mlp");
        graph.Input.Add(Value(InputName, OnnxElementType.Float, BatchDimension, InputSize));
        graph.Output.Add(Value(LogitsName, OnnxElementType.Float, BatchDimension, Classes));
        graph.Output.Add(Value(ProbabilitiesName, OnnxElementType.Float, BatchDimension, Classes));
        graph.Initializer.Add(Floats("W1", _w1, InputSize, HiddenSize));
        graph.Initializer.Add(Floats("B1", _b1, HiddenSize));
        graph.Initializer.Add(Floats("W2", _w2, HiddenSize, Classes));
        graph.Initializer.Add(Floats("B2", _b2, Classes));
        graph.Node.Add(Node("MatMul", [InputName, "W1"], ["hidden_mm"]));
        graph.Node.Add(Node("Add", ["hidden_mm", "B1"], ["hidden_pre"]));
        graph.Node.Add(Node("Relu", ["hidden_pre"], ["hidden"]));
        graph.Node.Add(Node("MatMul", ["hidden", "W2"], ["logits_mm"]));
        graph.Node.Add(Node("Add", ["logits_mm", "B2"], [LogitsName]));
        graph.Node.Add(Node("Softmax", [LogitsName], [ProbabilitiesName], Int("axis", -1)));
        return Serialize(graph);
    }

    /// <summary>Computes the probabilities for <paramref name="rows"/> rows of input, in double precision.</summary>
    /// <param name="input">Row-major input [rows, InputSize].</param>
    /// <param name="rows">Number of rows.</param>
    /// <returns>Row-major probabilities [rows, Classes].</returns>
    public float[] Forward(ReadOnlySpan<float> input, int rows) => Forward(input, rows, out _);

    /// <summary>Computes the probabilities and the logits for <paramref name="rows"/> rows of input, in double precision.</summary>
    /// <param name="input">Row-major input [rows, InputSize].</param>
    /// <param name="rows">Number of rows.</param>
    /// <param name="logits">Receives the row-major logits [rows, Classes].</param>
    /// <returns>Row-major probabilities [rows, Classes].</returns>
    public float[] Forward(ReadOnlySpan<float> input, int rows, out float[] logits)
    {
        CheckInput(input, rows);
        logits = new float[rows * Classes];
        var probabilities = new float[rows * Classes];
        var hidden = new double[HiddenSize];
        var z = new double[Classes];
        for (var r = 0; r < rows; r++)
        {
            HiddenPreActivation(input.Slice(r * InputSize, InputSize), hidden);

            for (var c = 0; c < Classes; c++)
            {
                z[c] = _b2[c];
            }

            for (var j = 0; j < HiddenSize; j++)
            {
                var h = Math.Max(0.0, hidden[j]);
                if (h == 0.0)
                {
                    continue;
                }

                var w = _w2.AsSpan(j * Classes, Classes);
                for (var c = 0; c < Classes; c++)
                {
                    z[c] += h * w[c];
                }
            }

            var max = double.NegativeInfinity;
            for (var c = 0; c < Classes; c++)
            {
                max = Math.Max(max, z[c]);
            }

            var sum = 0.0;
            for (var c = 0; c < Classes; c++)
            {
                sum += Math.Exp(z[c] - max);
            }

            for (var c = 0; c < Classes; c++)
            {
                logits[(r * Classes) + c] = (float)z[c];
                probabilities[(r * Classes) + c] = (float)(Math.Exp(z[c] - max) / sum);
            }
        }

        return probabilities;
    }

    /// <summary>
    /// The teacher's labels: the arg-max class of each row (what a cascade's cheaper student is measured against).
    /// </summary>
    /// <param name="input">Row-major input [rows, InputSize].</param>
    /// <param name="rows">Number of rows.</param>
    /// <returns>One class index per row.</returns>
    public int[] Label(ReadOnlySpan<float> input, int rows) => ArgMax(Forward(input, rows), rows, Classes);

    /// <summary>Fraction of rows on which this model and <paramref name="other"/> pick the same class.</summary>
    /// <param name="other">The model to compare with, of the same input size and class count.</param>
    /// <param name="input">Row-major input [rows, InputSize].</param>
    /// <param name="rows">Number of rows.</param>
    /// <returns>A value in [0, 1].</returns>
    public double Agreement(MlpModel other, ReadOnlySpan<float> input, int rows)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.InputSize != InputSize || other.Classes != Classes)
        {
            throw new ArgumentException(
                $"Cannot compare an MLP {InputSize}→{Classes} with an MLP {other.InputSize}→{other.Classes}.", nameof(other));
        }

        var mine = Label(input, rows);
        var theirs = other.Label(input, rows);
        var same = 0;
        for (var r = 0; r < rows; r++)
        {
            same += mine[r] == theirs[r] ? 1 : 0;
        }

        return rows == 0 ? 1.0 : (double)same / rows;
    }

    /// <summary>
    /// A cheaper student: keeps the <paramref name="keepHidden"/> hidden units whose outgoing weights (rows of W2)
    /// have the largest L2 norm, in their original order, drops the rest, and folds each dropped unit's mean activation
    /// over <see cref="CreateInputs"/>-style inputs into the output bias. Because the teacher's hidden units are of
    /// unequal importance (see <see cref="MlpModel"/>), a student that keeps the top eighth agrees with it on most rows.
    /// </summary>
    /// <param name="keepHidden">Number of hidden units to keep, 1 to HiddenSize.</param>
    /// <returns>A new model with the same input size and classes and <paramref name="keepHidden"/> hidden units.</returns>
    public MlpModel Prune(int keepHidden)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(keepHidden, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(keepHidden, HiddenSize);
        var norms = new double[HiddenSize];
        var order = new int[HiddenSize];
        for (var j = 0; j < HiddenSize; j++)
        {
            double n = 0;
            foreach (var w in _w2.AsSpan(j * Classes, Classes))
            {
                n += (double)w * w;
            }

            norms[j] = n;
            order[j] = j;
        }

        // Largest norm first; ties by index so that the result is deterministic.
        Array.Sort(order, (a, b) => norms[a] != norms[b] ? norms[b].CompareTo(norms[a]) : a.CompareTo(b));
        var kept = order.AsSpan(0, keepHidden);
        kept.Sort();

        var w1 = new float[InputSize * keepHidden];
        var b1 = new float[keepHidden];
        var w2 = new float[keepHidden * Classes];
        for (var k = 0; k < keepHidden; k++)
        {
            var j = kept[k];
            for (var i = 0; i < InputSize; i++)
            {
                w1[(i * keepHidden) + k] = _w1[(i * HiddenSize) + j];
            }

            b1[k] = _b1[j];
            _w2.AsSpan(j * Classes, Classes).CopyTo(w2.AsSpan(k * Classes, Classes));
        }

        // Mean replacement: each dropped unit's average contribution over calibration inputs moves into the bias.
        var meanActivation = MeanHiddenActivation(CreateInputs(CalibrationRows, seed: CalibrationSeed), CalibrationRows);
        var isKept = new bool[HiddenSize];
        foreach (var j in kept)
        {
            isKept[j] = true;
        }

        var b2 = new double[Classes];
        for (var c = 0; c < Classes; c++)
        {
            b2[c] = _b2[c];
        }

        for (var j = 0; j < HiddenSize; j++)
        {
            if (!isKept[j])
            {
                for (var c = 0; c < Classes; c++)
                {
                    b2[c] += meanActivation[j] * _w2[(j * Classes) + c];
                }
            }
        }

        var b2f = new float[Classes];
        for (var c = 0; c < Classes; c++)
        {
            b2f[c] = (float)b2[c];
        }

        return new MlpModel(InputSize, keepHidden, Classes, w1, b1, w2, b2f);
    }

    /// <summary>Deterministic inputs uniform in [-1, 1], row-major [rows, InputSize].</summary>
    /// <param name="rows">Number of rows.</param>
    /// <param name="seed">Seed: the same seed gives the same inputs.</param>
    /// <returns>A new array of rows × InputSize values.</returns>
    public float[] CreateInputs(int rows, int seed = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        return Uniform(new Random(seed), rows * InputSize, 1.0);
    }

    /// <summary>The index of the largest value of each row of a row-major [rows, columns] matrix.</summary>
    /// <param name="values">The matrix.</param>
    /// <param name="rows">Number of rows.</param>
    /// <param name="columns">Number of columns.</param>
    /// <returns>One index per row (the first one on ties).</returns>
    public static int[] ArgMax(ReadOnlySpan<float> values, int rows, int columns)
    {
        if (values.Length != rows * columns)
        {
            throw new ArgumentException($"Expected {rows}×{columns} = {rows * columns} values but got {values.Length}.", nameof(values));
        }

        var result = new int[rows];
        for (var r = 0; r < rows; r++)
        {
            var row = values.Slice(r * columns, columns);
            var best = 0;
            for (var c = 1; c < columns; c++)
            {
                if (row[c] > row[best])
                {
                    best = c;
                }
            }

            result[r] = best;
        }

        return result;
    }

    /// <summary>The default spread of hidden-unit importance.</summary>
    public const double DefaultImportanceSigma = 1.5;

    /// <summary>The default logit scale.</summary>
    public const double DefaultLogitGain = 2.0;
    private const int CalibrationRows = 256;
    private const int CalibrationSeed = 12345;

    private void HiddenPreActivation(ReadOnlySpan<float> x, Span<double> hidden)
    {
        for (var j = 0; j < HiddenSize; j++)
        {
            hidden[j] = _b1[j];
        }

        for (var i = 0; i < InputSize; i++)
        {
            double xi = x[i];
            var w = _w1.AsSpan(i * HiddenSize, HiddenSize);
            for (var j = 0; j < HiddenSize; j++)
            {
                hidden[j] += xi * w[j];
            }
        }
    }

    private double[] MeanHiddenActivation(ReadOnlySpan<float> input, int rows)
    {
        var hidden = new double[HiddenSize];
        var mean = new double[HiddenSize];
        for (var r = 0; r < rows; r++)
        {
            HiddenPreActivation(input.Slice(r * InputSize, InputSize), hidden);
            for (var j = 0; j < HiddenSize; j++)
            {
                mean[j] += Math.Max(0.0, hidden[j]) / rows;
            }
        }

        return mean;
    }

    private void CheckInput(ReadOnlySpan<float> input, int rows)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        if (input.Length != rows * InputSize)
        {
            throw new ArgumentException(
                $"Expected {rows} rows × {InputSize} = {rows * InputSize} input values but got {input.Length}.", nameof(input));
        }
    }

#pragma warning disable CA5394 // Test weights, not security: System.Random with a seed is the point.

    /// <summary>
    /// Multiplies row j of W2 by a log-normal importance e^(σ·g), g ~ N(0, 1), then rescales the whole matrix so
    /// that its mean square is unchanged: like a trained network, a minority of hidden units carries most of the signal.
    /// </summary>
    private static void ScaleOutgoingRows(Random random, float[] w2, int hidden, int classes, double importanceSigma, double logitGain)
    {
        var scales = new double[hidden];
        var meanSquare = 0.0;
        for (var j = 0; j < hidden; j++)
        {
            var u1 = 1.0 - random.NextDouble();
            var u2 = random.NextDouble();
            var gaussian = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
            scales[j] = Math.Exp(importanceSigma * gaussian);
            meanSquare += scales[j] * scales[j] / hidden;
        }

        var norm = logitGain / Math.Sqrt(meanSquare);
        for (var j = 0; j < hidden; j++)
        {
            var scale = (float)(scales[j] * norm);
            foreach (ref var w in w2.AsSpan(j * classes, classes))
            {
                w *= scale;
            }
        }
    }

    private static float[] Uniform(Random random, int count, double limit)
    {
        var values = new float[count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = (float)(((random.NextDouble() * 2.0) - 1.0) * limit);
        }

        return values;
    }
#pragma warning restore CA5394
}
