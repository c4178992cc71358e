using System.Text.Json;
using InferKit.Backends;
using InferKit.Models;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Protocol;

/// <summary>Writes the protocol's metadata, health and error objects.</summary>
internal static class MetadataWriter
{
    /// <summary><c>{"name": ..., "version": ..., "extensions": [...]}</c></summary>
    public static void WriteServerMetadata(Utf8JsonWriter writer, string name, string version)
    {
        writer.WriteStartObject();
        writer.WriteString("name"u8, name);
        writer.WriteString("version"u8, version);
        writer.WriteStartArray("extensions"u8);
        writer.WriteStringValue(ProtocolNames.BinaryTensorDataExtension);
        writer.WriteEndArray();
        writer.WriteEndObject();
        writer.Flush();
    }

    /// <summary><c>{"name": ..., "versions": [...], "platform": ..., "inputs": [...], "outputs": [...]}</c></summary>
    public static void WriteModelMetadata(Utf8JsonWriter writer, ModelInfo model, ModelSignature signature)
    {
        writer.WriteStartObject();
        writer.WriteString("name"u8, model.Name);
        writer.WriteStartArray("versions"u8);
        foreach (var v in model.Versions)
        {
            writer.WriteStringValue(v);
        }

        writer.WriteEndArray();
        // The protocol allows a fixed list of platform names; InferKit's "onnxruntime" is its "onnx_onnxv1". Other
        // platforms (a custom backend's) have no name in that list and go out as they are.
        writer.WriteString("platform"u8, model.Platform == "onnxruntime" ? ProtocolNames.OnnxPlatform : model.Platform);
        writer.WritePropertyName("inputs"u8);
        WriteSpecs(writer, signature.Inputs);
        writer.WritePropertyName("outputs"u8);
        WriteSpecs(writer, signature.Outputs);
        writer.WriteEndObject();
        writer.Flush();
    }

    /// <summary><c>{"name": ..., "version": ..., "ready": ...}</c></summary>
    public static void WriteModelReady(Utf8JsonWriter writer, ModelInfo model, bool ready)
    {
        writer.WriteStartObject();
        writer.WriteString("name"u8, model.Name);
        writer.WriteString("version"u8, model.Version);
        writer.WriteBoolean("ready"u8, ready);
        writer.WriteEndObject();
        writer.Flush();
    }

    /// <summary><c>{"&lt;property&gt;": value}</c>, for the live and ready health objects.</summary>
    public static void WriteFlag(Utf8JsonWriter writer, ReadOnlySpan<byte> property, bool value)
    {
        writer.WriteStartObject();
        writer.WriteBoolean(property, value);
        writer.WriteEndObject();
        writer.Flush();
    }

    /// <summary><c>{"error": message}</c></summary>
    public static void WriteError(Utf8JsonWriter writer, string message)
    {
        writer.WriteStartObject();
        writer.WriteString("error"u8, message);
        writer.WriteEndObject();
        writer.Flush();
    }

    private static void WriteSpecs(Utf8JsonWriter writer, IReadOnlyList<TensorSpec> specs)
    {
        writer.WriteStartArray();
        foreach (var spec in specs)
        {
            writer.WriteStartObject();
            writer.WriteString("name"u8, spec.Name);
            writer.WriteString("datatype"u8, spec.ElementType.ToProtocolName());
            writer.WriteStartArray("shape"u8);
            foreach (var d in spec.Shape)
            {
                writer.WriteNumberValue(d < 0 ? -1 : d);
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    }
}
