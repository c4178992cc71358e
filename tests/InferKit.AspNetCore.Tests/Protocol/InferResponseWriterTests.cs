using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using InferKit.AspNetCore.Protocol;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Tests.Protocol;

public sealed class InferResponseWriterTests
{
    private static (JsonDocument Json, byte[] Binary) Write(Tensor[] outputs, OutputMode[] modes, string? id = "r1", string? version = "1")
    {
        var json = new ArrayBufferWriter<byte>();
        long binaryLength;
        using (var writer = new Utf8JsonWriter(json))
        {
            binaryLength = InferResponseWriter.WriteJson(writer, "m", version, id, outputs, modes);
        }

        var binary = new ArrayBufferWriter<byte>();
        InferResponseWriter.WriteBinary(binary, outputs, modes);
        Assert.Equal(binaryLength, binary.WrittenCount);
        return (JsonDocument.Parse(json.WrittenMemory), binary.WrittenSpan.ToArray());
    }

    [Fact]
    public void Json_outputs_carry_name_datatype_shape_and_flat_data()
    {
        var outputs = new[]
        {
            Tensor.Create("f", new[] { 1.5f, -2f, 0.1f, 3f }, 2, 2),
            Tensor.Create("l", new[] { long.MinValue, long.MaxValue }, 2),
            Tensor.Create("u", new[] { ulong.MaxValue }, 1),
            Tensor.Create("b", new[] { true, false }, 2),
            Tensor.Create("s", new[] { "héllo", "\"q\"" }, 2),
            Tensor.Create("h", new[] { (Half)0.5f }, 1),
            Tensor.Create("bf", new[] { (BFloat16)(-1.25f) }, 1),
            Tensor.Create("i8", new sbyte[] { -5 }, 1),
        };
        var (doc, binary) = Write(outputs, [.. Enumerable.Repeat(OutputMode.Json, outputs.Length)]);
        using var docScope = doc;
        Assert.Empty(binary);
        var root = doc.RootElement;
        Assert.Equal("m", root.GetProperty("model_name").GetString());
        Assert.Equal("1", root.GetProperty("model_version").GetString());
        Assert.Equal("r1", root.GetProperty("id").GetString());
        var o = root.GetProperty("outputs");
        Assert.Equal(outputs.Length, o.GetArrayLength());
        Assert.Equal("f", o[0].GetProperty("name").GetString());
        Assert.Equal("FP32", o[0].GetProperty("datatype").GetString());
        Assert.Equal([2L, 2L], o[0].GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal([1.5f, -2f, 0.1f, 3f], o[0].GetProperty("data").EnumerateArray().Select(e => e.GetSingle()));
        Assert.Equal([long.MinValue, long.MaxValue], o[1].GetProperty("data").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal("INT64", o[1].GetProperty("datatype").GetString());
        Assert.Equal(ulong.MaxValue, o[2].GetProperty("data")[0].GetUInt64());
        Assert.Equal([true, false], o[3].GetProperty("data").EnumerateArray().Select(e => e.GetBoolean()));
        Assert.Equal("BOOL", o[3].GetProperty("datatype").GetString());
        Assert.Equal(["héllo", "\"q\""], o[4].GetProperty("data").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("BYTES", o[4].GetProperty("datatype").GetString());
        Assert.Equal(0.5, o[5].GetProperty("data")[0].GetDouble());
        Assert.Equal("FP16", o[5].GetProperty("datatype").GetString());
        Assert.Equal(-1.25, o[6].GetProperty("data")[0].GetDouble());
        Assert.Equal("BF16", o[6].GetProperty("datatype").GetString());
        Assert.Equal(-5, o[7].GetProperty("data")[0].GetInt32());
    }

    [Fact]
    public void Skipped_outputs_are_left_out_and_missing_id_is_not_written()
    {
        var outputs = new[] { Tensor.Create("a", new[] { 1f }, 1), Tensor.Create("b", new[] { 2f }, 1) };
        var (doc, _) = Write(outputs, [OutputMode.Skip, OutputMode.Json], id: null, version: null);
        using var docScope = doc;
        Assert.False(doc.RootElement.TryGetProperty("id", out _));
        Assert.False(doc.RootElement.TryGetProperty("model_version", out _));
        var o = Assert.Single(doc.RootElement.GetProperty("outputs").EnumerateArray());
        Assert.Equal("b", o.GetProperty("name").GetString());
    }

    [Fact]
    public void Binary_outputs_have_a_size_parameter_and_their_bytes_follow_in_order()
    {
        float[] f = [1f, 2f, 3f];
        string[] s = ["ab", "", "é"];
        var outputs = new[] { Tensor.Create("f", f, 3), Tensor.Create("j", new[] { 9 }, 1), Tensor.Create("s", s, 3) };
        var (doc, binary) = Write(outputs, [OutputMode.Binary, OutputMode.Json, OutputMode.Binary]);
        using var docScope = doc;
        var o = doc.RootElement.GetProperty("outputs");
        Assert.Equal(12, o[0].GetProperty("parameters").GetProperty("binary_data_size").GetInt64());
        Assert.False(o[0].TryGetProperty("data", out _));
        Assert.Equal(9, o[1].GetProperty("data")[0].GetInt32());
        long stringsSize = o[2].GetProperty("parameters").GetProperty("binary_data_size").GetInt64();
        Assert.Equal(4 + 2 + 4 + 0 + 4 + 2, stringsSize);

        Assert.Equal(f, MemoryMarshal.Cast<byte, float>(binary.AsSpan(0, 12)).ToArray());
        var rest = binary.AsSpan(12);
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(rest));
        Assert.Equal("ab", Encoding.UTF8.GetString(rest.Slice(4, 2)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(rest[6..]));
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(rest[10..]));
        Assert.Equal("é", Encoding.UTF8.GetString(rest.Slice(14, 2)));
    }

    [Fact]
    public void Non_finite_floats_are_written_as_strings_the_reader_accepts()
    {
        var outputs = new[] { Tensor.Create("x", new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity, 1f }, 4) };
        var (doc, _) = Write(outputs, [OutputMode.Json]);
        using var docScope = doc;
        var data = doc.RootElement.GetProperty("outputs")[0].GetProperty("data");
        Assert.Equal("NaN", data[0].GetString());
        Assert.Equal("Infinity", data[1].GetString());
        Assert.Equal("-Infinity", data[2].GetString());

        string request = $$$"""{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":{{{data.GetRawText()}}}}]}""";
        var bytes = Encoding.UTF8.GetBytes(request);
        using var p = InferRequestReader.Read(bytes, bytes.Length);
        var back = p.Inputs[0].ToArray<float>();
        Assert.True(float.IsNaN(back[0]));
        Assert.Equal([float.PositiveInfinity, float.NegativeInfinity, 1f], back[1..]);
    }

    [Fact]
    public void What_the_writer_sends_as_binary_the_reader_reads_back_exactly()
    {
        var random = new Random(3);
        var f = new float[50];
        for (int i = 0; i < f.Length; i++)
        {
            f[i] = (float)(random.NextDouble() * 2 - 1);
        }

        var outputs = new[] { Tensor.Create("x", f, 5, 10), Tensor.Create("s", new[] { "one", "two" }, 2) };
        var (doc, binary) = Write(outputs, [OutputMode.Binary, OutputMode.Binary]);
        using var docScope = doc;
        var o = doc.RootElement.GetProperty("outputs");
        string request = $$$"""
            {"inputs":[
              {"name":"x","shape":[5,10],"datatype":"FP32","parameters":{"binary_data_size":{{{o[0].GetProperty("parameters").GetProperty("binary_data_size").GetInt64()}}}}},
              {"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":{{{o[1].GetProperty("parameters").GetProperty("binary_data_size").GetInt64()}}}}}
            ]}
            """;
        var header = Encoding.UTF8.GetBytes(request);
        using var p = InferRequestReader.Read(InferRequestReaderTests.Concat(header, binary), header.Length);
        Assert.Equal(f, p.Inputs[0].ToArray<float>());
        Assert.Equal(["one", "two"], p.Inputs[1].GetStrings().ToArray());
    }

    [Fact]
    public void Json_floats_round_trip_exactly()
    {
        var random = new Random(5);
        var f = new float[200];
        for (int i = 0; i < f.Length; i++)
        {
            f[i] = BitConverter.Int32BitsToSingle(random.Next()) is var v && float.IsFinite(v) ? v : 1f;
        }

        var (doc, _) = Write([Tensor.Create("x", f, f.Length)], [OutputMode.Json]);
        using var docScope = doc;
        string request = $$$"""{"inputs":[{"name":"x","shape":[{{{f.Length}}}],"datatype":"FP32","data":{{{doc.RootElement.GetProperty("outputs")[0].GetProperty("data").GetRawText()}}}}]}""";
        var bytes = Encoding.UTF8.GetBytes(request);
        using var p = InferRequestReader.Read(bytes, bytes.Length);
        Assert.Equal(f, p.Inputs[0].ToArray<float>());
    }
}
