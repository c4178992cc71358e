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

    /// <summary>
    /// Writes fraud.onnx into <paramref name="folder"/> unless it is already there with the right contents, and returns
    /// its path. A file that differs (truncated by a crash or a full disk, or otherwise damaged) is replaced, so that
    /// the model is never served from a broken file that a restart would keep reusing.
    /// </summary>
    public static string EnsureFile(string folder)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "fraud.onnx");
        byte[] expected = Create().ToOnnx(); // a few KB, generated from a fixed seed: cheaper than trusting the disk
        if (HasContents(path, expected))
        {
            return path;
        }

        // Write beside, flush to the disk, then move over: a crash mid-write never leaves a truncated model in place.
        string temp = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(expected);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
        }
        catch (IOException) when (HasContents(path, expected))
        {
            // Another process wrote it meanwhile (and may hold it open).
        }
        finally
        {
            File.Delete(temp); // no-op once moved
        }

        return path;
    }

    private static bool HasContents(string path, byte[] expected)
    {
        try
        {
            var info = new FileInfo(path);
            return info.Exists && info.Length == expected.Length && File.ReadAllBytes(path).AsSpan().SequenceEqual(expected);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }
}
