using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Protocol;

/// <summary>
/// Writes an Open Inference Protocol inference response: the JSON object with <see cref="Utf8JsonWriter"/>, and the
/// binary tensor data that follows it for outputs sent as binary (Triton's binary tensor data extension).
/// </summary>
internal static class InferResponseWriter
{
    /// <summary>A bound on <see cref="Names"/>: names beyond it are encoded on each use.</summary>
    private const int MaxEncodedNames = 4096;

    /// <summary>Model, version and output names, encoded once: they come from the server's models, not from callers.</summary>
    private static readonly ConcurrentDictionary<string, JsonEncodedText> Names = new(StringComparer.Ordinal);

    /// <summary>The protocol's datatype names by element type, encoded once.</summary>
    private static readonly JsonEncodedText[] Datatypes = EncodeDatatypes();

    /// <summary>Writes the JSON part.</summary>
    /// <param name="writer">The writer.</param>
    /// <param name="model">The model name.</param>
    /// <param name="version">The version that served, if known.</param>
    /// <param name="id">The request id to echo, if any.</param>
    /// <param name="outputs">The model's outputs.</param>
    /// <param name="modes">How each output goes back (one per output).</param>
    /// <param name="answeredBy">With <paramref name="note"/>: the real model that answered a virtual model's request.</param>
    /// <param name="note">
    /// A virtual model's note (a cascade that kept an earlier stage's answer, an adaptive model that stepped past a
    /// variant): written, with <paramref name="answeredBy"/>, as the response parameters <c>inferkit_note</c> and
    /// <c>inferkit_answered_by</c>, so an HTTP caller can tell such an answer from a regular one. Null for none.
    /// </param>
    /// <returns>The number of binary bytes that must follow the JSON part.</returns>
    public static long WriteJson(Utf8JsonWriter writer, string model, string? version, string? id, IReadOnlyList<Tensor> outputs, ReadOnlySpan<OutputMode> modes,
        string? answeredBy = null, string? note = null)
    {
        long binaryLength = 0;
        writer.WriteStartObject();
        writer.WriteString("model_name"u8, Encoded(model));
        if (version is not null)
        {
            writer.WriteString("model_version"u8, Encoded(version));
        }

        if (id is not null)
        {
            writer.WriteString("id"u8, id);
        }

        if (note is not null)
        {
            writer.WriteStartObject("parameters"u8);
            if (answeredBy is not null)
            {
                writer.WriteString("inferkit_answered_by"u8, answeredBy);
            }

            writer.WriteString("inferkit_note"u8, note);
            writer.WriteEndObject();
        }

        writer.WriteStartArray("outputs"u8);
        for (int i = 0; i < outputs.Count; i++)
        {
            if (modes[i] == OutputMode.Skip)
            {
                continue;
            }

            var t = outputs[i];
            writer.WriteStartObject();
            writer.WriteString("name"u8, Encoded(t.Name));
            writer.WriteString("datatype"u8, Datatype(t.ElementType));
            writer.WriteStartArray("shape"u8);
            foreach (var d in t.Shape)
            {
                writer.WriteNumberValue(d);
            }

            writer.WriteEndArray();
            if (modes[i] == OutputMode.Binary)
            {
                long size = BinarySize(t);
                binaryLength += size;
                writer.WriteStartObject("parameters"u8);
                writer.WriteNumber("binary_data_size"u8, size);
                writer.WriteEndObject();
            }
            else
            {
                writer.WritePropertyName("data"u8);
                WriteData(writer, t);
            }

            writer.WriteEndObject();
        }

        writer.WriteEndArray();
        writer.WriteEndObject();
        writer.Flush();
        return binaryLength;
    }

    private static JsonEncodedText Encoded(string name)
    {
        if (Names.TryGetValue(name, out var encoded))
        {
            return encoded;
        }

        encoded = JsonEncodedText.Encode(name, JsonWriterCache.Encoder);
        if (Names.Count < MaxEncodedNames)
        {
            Names.TryAdd(name, encoded);
        }

        return encoded;
    }

    private static JsonEncodedText[] EncodeDatatypes()
    {
        var types = Enum.GetValues<TensorElementType>();
        var encoded = new JsonEncodedText[(int)types.Max() + 1];
        foreach (var t in types)
        {
            encoded[(int)t] = JsonEncodedText.Encode(t.ToProtocolName(), JsonWriterCache.Encoder);
        }

        return encoded;
    }

    private static JsonEncodedText Datatype(TensorElementType type)
        => (uint)type < (uint)Datatypes.Length ? Datatypes[(int)type] : JsonEncodedText.Encode(type.ToProtocolName(), JsonWriterCache.Encoder);

    /// <summary>Writes the binary data of every output sent as binary, in order.</summary>
    public static void WriteBinary(IBufferWriter<byte> destination, IReadOnlyList<Tensor> outputs, ReadOnlySpan<OutputMode> modes)
    {
        for (int i = 0; i < outputs.Count; i++)
        {
            if (modes[i] != OutputMode.Binary)
            {
                continue;
            }

            var t = outputs[i];
            if (t.ElementType == TensorElementType.String)
            {
                foreach (var s in t.GetStrings())
                {
                    int length = Encoding.UTF8.GetByteCount(s);
                    var span = destination.GetSpan(4 + length);
                    BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)length);
                    Encoding.UTF8.GetBytes(s, span[4..]);
                    destination.Advance(4 + length);
                }
            }
            else
            {
                var bytes = t.Bytes;
                while (!bytes.IsEmpty)
                {
                    var span = destination.GetSpan(Math.Min(bytes.Length, 64 * 1024));
                    int n = Math.Min(span.Length, bytes.Length);
                    bytes[..n].CopyTo(span);
                    destination.Advance(n);
                    bytes = bytes[n..];
                }
            }
        }
    }

    /// <summary>The size of a tensor's binary form: raw little-endian elements, or for BYTES a 4-byte length before each element.</summary>
    public static long BinarySize(in Tensor tensor)
    {
        if (tensor.ElementType != TensorElementType.String)
        {
            return tensor.ByteLength;
        }

        long size = 0;
        foreach (var s in tensor.GetStrings())
        {
            size += 4 + Encoding.UTF8.GetByteCount(s);
        }

        return size;
    }

    /// <summary>Writes a tensor's elements as a flat JSON array.</summary>
    public static void WriteData(Utf8JsonWriter writer, in Tensor t)
    {
        writer.WriteStartArray();
        switch (t.ElementType)
        {
            case TensorElementType.Float32:
                foreach (var v in t.GetSpan<float>())
                {
                    WriteFloating(writer, v);
                }

                break;
            case TensorElementType.Float64:
                foreach (var v in t.GetSpan<double>())
                {
                    WriteFloating(writer, v);
                }

                break;
            case TensorElementType.Float16:
                foreach (var v in t.GetSpan<Half>())
                {
                    WriteFloating(writer, (float)v);
                }

                break;
            case TensorElementType.BFloat16:
                foreach (var v in t.GetSpan<BFloat16>())
                {
                    WriteFloating(writer, (float)v);
                }

                break;
            case TensorElementType.Int8:
                foreach (var v in t.GetSpan<sbyte>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.Int16:
                foreach (var v in t.GetSpan<short>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.Int32:
                foreach (var v in t.GetSpan<int>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.Int64:
                foreach (var v in t.GetSpan<long>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.UInt8:
                foreach (var v in t.GetSpan<byte>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.UInt16:
                foreach (var v in t.GetSpan<ushort>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.UInt32:
                foreach (var v in t.GetSpan<uint>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.UInt64:
                foreach (var v in t.GetSpan<ulong>())
                {
                    writer.WriteNumberValue(v);
                }

                break;
            case TensorElementType.Bool:
                foreach (var v in t.GetSpan<bool>())
                {
                    writer.WriteBooleanValue(v);
                }

                break;
            case TensorElementType.String:
                foreach (var v in t.GetStrings())
                {
                    writer.WriteStringValue(v);
                }

                break;
            default:
                throw new InvalidOperationException($"Output '{t.Name}' has element type {t.ElementType}, which the protocol cannot carry.");
        }

        writer.WriteEndArray();
    }

    /// <summary>JSON has no NaN or infinity: they go as the strings "NaN", "Infinity" and "-Infinity", which the reader accepts back.</summary>
    private static void WriteFloating(Utf8JsonWriter writer, float value)
    {
        if (float.IsFinite(value))
        {
            writer.WriteNumberValue(value);
        }
        else
        {
            writer.WriteStringValue(float.IsNaN(value) ? "NaN"u8 : value > 0 ? "Infinity"u8 : "-Infinity"u8);
        }
    }

    private static void WriteFloating(Utf8JsonWriter writer, double value)
    {
        if (double.IsFinite(value))
        {
            writer.WriteNumberValue(value);
        }
        else
        {
            writer.WriteStringValue(double.IsNaN(value) ? "NaN"u8 : value > 0 ? "Infinity"u8 : "-Infinity"u8);
        }
    }
}
