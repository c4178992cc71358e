using InferKit.TestModels;
using Microsoft.ML.OnnxRuntime;

namespace InferKit.LoadTest;

/// <summary>
/// The model every peer serves (MLP 256→1024→10, fixed seed), one distinct input row per caller and the expected
/// probabilities for each, so every answer under load is checked against its own caller's input.
/// </summary>
internal sealed class Workload : IDisposable
{
    public const string ModelName = "mlp";
    public const int DistinctInputs = 256;
    private const float Tolerance = 1e-4f;

    private readonly float[][] _inputs;
    private readonly float[][] _expected;

    public Workload(bool noSpinning = false)
    {
        NoSpinning = noSpinning;
        Mlp = new MlpModel(MlpModel.DefaultInputSize, MlpModel.DefaultHiddenSize, MlpModel.DefaultClasses);
        Bytes = Mlp.ToOnnx();
        RawSession = CreateSession(intraOpThreads: null);
        _inputs = new float[DistinctInputs][];
        _expected = new float[DistinctInputs][];
        using var runOptions = new RunOptions();
        for (int i = 0; i < DistinctInputs; i++)
        {
            _inputs[i] = Mlp.CreateInputs(1, seed: 1000 + i);
            using var input = OrtValue.CreateTensorValueFromMemory(_inputs[i], [1, Mlp.InputSize]);
            using var outputs = RawSession.Run(runOptions, InputNames, [input], OutputNames);
            _expected[i] = outputs[1].GetTensorDataAsSpan<float>().ToArray();
        }
    }

    public MlpModel Mlp { get; }

    /// <summary>Sessions made here do not spin their intra-op threads.</summary>
    public bool NoSpinning { get; }

    public byte[] Bytes { get; }

    public int InputSize => Mlp.InputSize;

    public int Classes => Mlp.Classes;

    /// <summary>A session with ONNX Runtime's defaults and full graph optimisation, as InferKit creates by default.</summary>
    public InferenceSession RawSession { get; }

    public static string[] InputNames { get; } = [MlpModel.InputName];

    public static string[] OutputNames { get; } = [MlpModel.LogitsName, MlpModel.ProbabilitiesName];

    public float[] Input(int id) => _inputs[id % DistinctInputs];

    public bool Matches(int id, ReadOnlySpan<float> probabilities)
    {
        var expected = _expected[id % DistinctInputs];
        if (probabilities.Length != expected.Length)
        {
            return false;
        }

        for (int i = 0; i < expected.Length; i++)
        {
            if (!(Math.Abs(probabilities[i] - expected[i]) <= Tolerance))
            {
                return false;
            }
        }

        return true;
    }

    public InferenceSession CreateSession(int? intraOpThreads)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        if (intraOpThreads is int n)
        {
            options.IntraOpNumThreads = n;
        }

        if (NoSpinning)
        {
            options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        }

        return new InferenceSession(Bytes, options);
    }

    public void Dispose() => RawSession.Dispose();
}
