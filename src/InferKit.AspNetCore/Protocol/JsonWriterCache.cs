using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace InferKit.AspNetCore.Protocol;

/// <summary>One reusable <see cref="Utf8JsonWriter"/> per thread; writing is synchronous, so a writer is never shared.</summary>
internal static class JsonWriterCache
{
    /// <summary>The writers' encoder; text encoded ahead of time (<see cref="JsonEncodedText"/>) must use it too.</summary>
    public static readonly JavaScriptEncoder Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping;

    private static readonly JsonWriterOptions Options = new()
    {
        Encoder = Encoder,
        Indented = false,
        SkipValidation = true,
    };

    [ThreadStatic]
    private static Utf8JsonWriter? t_cached;

    public static Utf8JsonWriter Rent(IBufferWriter<byte> output)
    {
        var writer = t_cached;
        if (writer is null)
        {
            return new Utf8JsonWriter(output, Options);
        }

        t_cached = null;
        writer.Reset(output);
        return writer;
    }

    public static void Return(Utf8JsonWriter writer)
    {
        writer.Reset();
        t_cached = writer;
    }
}
