using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace InferKit.TestModels;

/// <summary>A dimension of a graph input or output: a fixed size or a symbolic name.</summary>
internal readonly record struct Dim(long Value, string? Name)
{
    public static implicit operator Dim(long value) => new(value, null);

    public static implicit operator Dim(string name) => new(0, name);
}

/// <summary>Small helpers over OnnxSharp's protobuf classes: IR 8, default-domain opset 17.</summary>
internal static class OnnxBuilder
{
    public const long IrVersion = 8;
    public const long Opset = 17;
    public const string BatchDimension = "batch";

    public static GraphProto Graph(string name) => new() { Name = name };

    public static ValueInfoProto Value(string name, OnnxElementType type, params Dim[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(dim.Name is null
                ? new TensorShapeProto.Types.Dimension { DimValue = dim.Value }
                : new TensorShapeProto.Types.Dimension { DimParam = dim.Name });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    public static NodeProto Node(string opType, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = $"{opType}_{outputs[0]}" };
        node.Input.Add(inputs);
        node.Output.Add(outputs);
        node.Attribute.Add(attributes);
        return node;
    }

    public static AttributeProto Int(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static TensorProto Floats(string name, ReadOnlySpan<float> data, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)OnnxElementType.Float };
        tensor.Dims.Add(dims);
        tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data));
        return tensor;
    }

    public static TensorProto Int64s(string name, ReadOnlySpan<long> data, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)OnnxElementType.Int64 };
        tensor.Dims.Add(dims);
        tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data));
        return tensor;
    }

    public static byte[] Serialize(GraphProto graph)
    {
        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "InferKit.TestModels",
            ProducerVersion = "1",
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = Opset });
        return model.ToByteArray();
    }
}
