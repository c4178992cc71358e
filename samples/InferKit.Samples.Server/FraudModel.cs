using InferKit.TestModels;

namespace InferKit.Samples.Server;

/// <summary>The sample's fraud classifier: an MLP over 32 transaction features → 64 hidden units → 2 classes (legit, fraud).</summary>
public static class FraudModel
{
    /// <summary>Number of input features.</summary>
    public const int Features = 32;

    /// <summary>Hidden units.</summary>
    public const int Hidden = 64;

    /// <summary>Classes: 0 legit, 1 fraud.</summary>
    public const int Classes = 2;

    /// <summary>The seed of the generated weights.</summary>
    public const int Seed = 2024;

    /// <summary>The in-memory model, for computing expected outputs.</summary>
    public static MlpModel Create() => new(Features, Hidden, Classes, Seed);

    /// <summary>Writes fraud.onnx into <paramref name="folder"/> unless it is already there, and returns its path.</summary>
    public static string EnsureFile(string folder)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "fraud.onnx");
        if (!File.Exists(path))
        {
            // Write beside and move, so a crash mid-write never leaves a truncated model to be reused.
            string temp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
            File.WriteAllBytes(temp, Create().ToOnnx());
            try
            {
                File.Move(temp, path, overwrite: false);
            }
            catch (IOException) when (File.Exists(path))
            {
                File.Delete(temp); // another process wrote it first
            }
        }

        return path;
    }
}
