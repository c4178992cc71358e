namespace InferKit.Tensors;

/// <summary>The element type of a <see cref="Tensor"/>. The names follow ONNX; the CLR type for each is listed.</summary>
public enum TensorElementType
{
    /// <summary>Not a valid element type; the default value.</summary>
    Undefined = 0,
    /// <summary>32-bit IEEE float (<see cref="float"/>).</summary>
    Float32,
    /// <summary>16-bit IEEE float (<see cref="Half"/>).</summary>
    Float16,
    /// <summary>16-bit brain float (<see cref="InferKit.Tensors.BFloat16"/>).</summary>
    BFloat16,
    /// <summary>64-bit IEEE float (<see cref="double"/>).</summary>
    Float64,
    /// <summary>Signed 8-bit integer (<see cref="sbyte"/>).</summary>
    Int8,
    /// <summary>Signed 16-bit integer (<see cref="short"/>).</summary>
    Int16,
    /// <summary>Signed 32-bit integer (<see cref="int"/>).</summary>
    Int32,
    /// <summary>Signed 64-bit integer (<see cref="long"/>).</summary>
    Int64,
    /// <summary>Unsigned 8-bit integer (<see cref="byte"/>).</summary>
    UInt8,
    /// <summary>Unsigned 16-bit integer (<see cref="ushort"/>).</summary>
    UInt16,
    /// <summary>Unsigned 32-bit integer (<see cref="uint"/>).</summary>
    UInt32,
    /// <summary>Unsigned 64-bit integer (<see cref="ulong"/>).</summary>
    UInt64,
    /// <summary>Boolean, one byte per element (<see cref="bool"/>).</summary>
    Bool,
    /// <summary>UTF-16 string (<see cref="string"/>); the protocol's BYTES.</summary>
    String,
}

/// <summary>Facts about <see cref="TensorElementType"/> values.</summary>
public static class TensorElementTypes
{
    /// <summary>Size in bytes of one element, or 0 for <see cref="TensorElementType.String"/> and <see cref="TensorElementType.Undefined"/>.</summary>
    public static int SizeOf(this TensorElementType type) => type switch
    {
        TensorElementType.Float32 or TensorElementType.Int32 or TensorElementType.UInt32 => 4,
        TensorElementType.Float64 or TensorElementType.Int64 or TensorElementType.UInt64 => 8,
        TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Int16 or TensorElementType.UInt16 => 2,
        TensorElementType.Int8 or TensorElementType.UInt8 or TensorElementType.Bool => 1,
        _ => 0,
    };

    /// <summary>The CLR type that holds one element.</summary>
    public static Type ClrType(this TensorElementType type) => type switch
    {
        TensorElementType.Float32 => typeof(float),
        TensorElementType.Float16 => typeof(Half),
        TensorElementType.BFloat16 => typeof(BFloat16),
        TensorElementType.Float64 => typeof(double),
        TensorElementType.Int8 => typeof(sbyte),
        TensorElementType.Int16 => typeof(short),
        TensorElementType.Int32 => typeof(int),
        TensorElementType.Int64 => typeof(long),
        TensorElementType.UInt8 => typeof(byte),
        TensorElementType.UInt16 => typeof(ushort),
        TensorElementType.UInt32 => typeof(uint),
        TensorElementType.UInt64 => typeof(ulong),
        TensorElementType.Bool => typeof(bool),
        TensorElementType.String => typeof(string),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Undefined tensor element type."),
    };

    /// <summary>The element type whose CLR type is <typeparamref name="T"/>.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a tensor element type.</exception>
    public static TensorElementType Of<T>() => ElementTypeOf<T>.Value != TensorElementType.Undefined
        ? ElementTypeOf<T>.Value
        : throw new NotSupportedException($"{typeof(T).Name} is not a tensor element type. Use float, Half, BFloat16, double, sbyte, short, int, long, byte, ushort, uint, ulong, bool or string.");

    /// <summary>The name the Open Inference Protocol uses for this type (FP32, INT64, BYTES, ...).</summary>
    public static string ToProtocolName(this TensorElementType type) => type switch
    {
        TensorElementType.Float32 => "FP32",
        TensorElementType.Float16 => "FP16",
        TensorElementType.BFloat16 => "BF16",
        TensorElementType.Float64 => "FP64",
        TensorElementType.Int8 => "INT8",
        TensorElementType.Int16 => "INT16",
        TensorElementType.Int32 => "INT32",
        TensorElementType.Int64 => "INT64",
        TensorElementType.UInt8 => "UINT8",
        TensorElementType.UInt16 => "UINT16",
        TensorElementType.UInt32 => "UINT32",
        TensorElementType.UInt64 => "UINT64",
        TensorElementType.Bool => "BOOL",
        TensorElementType.String => "BYTES",
        _ => "UNDEFINED",
    };

    /// <summary>Parses an Open Inference Protocol datatype name (case-sensitive, as the protocol defines them).</summary>
    public static bool TryParseProtocolName(ReadOnlySpan<char> name, out TensorElementType type)
    {
        type = name switch
        {
            "FP32" => TensorElementType.Float32,
            "FP16" => TensorElementType.Float16,
            "BF16" => TensorElementType.BFloat16,
            "FP64" => TensorElementType.Float64,
            "INT8" => TensorElementType.Int8,
            "INT16" => TensorElementType.Int16,
            "INT32" => TensorElementType.Int32,
            "INT64" => TensorElementType.Int64,
            "UINT8" => TensorElementType.UInt8,
            "UINT16" => TensorElementType.UInt16,
            "UINT32" => TensorElementType.UInt32,
            "UINT64" => TensorElementType.UInt64,
            "BOOL" => TensorElementType.Bool,
            "BYTES" => TensorElementType.String,
            _ => TensorElementType.Undefined,
        };
        return type != TensorElementType.Undefined;
    }

    private static class ElementTypeOf<T>
    {
        public static readonly TensorElementType Value = Compute();

        private static TensorElementType Compute()
        {
            var t = typeof(T);
            return t switch
            {
                _ when t == typeof(float) => TensorElementType.Float32,
                _ when t == typeof(Half) => TensorElementType.Float16,
                _ when t == typeof(BFloat16) => TensorElementType.BFloat16,
                _ when t == typeof(double) => TensorElementType.Float64,
                _ when t == typeof(sbyte) => TensorElementType.Int8,
                _ when t == typeof(short) => TensorElementType.Int16,
                _ when t == typeof(int) => TensorElementType.Int32,
                _ when t == typeof(long) => TensorElementType.Int64,
                _ when t == typeof(byte) => TensorElementType.UInt8,
                _ when t == typeof(ushort) => TensorElementType.UInt16,
                _ when t == typeof(uint) => TensorElementType.UInt32,
                _ when t == typeof(ulong) => TensorElementType.UInt64,
                _ when t == typeof(bool) => TensorElementType.Bool,
                _ when t == typeof(string) => TensorElementType.String,
                _ => TensorElementType.Undefined,
            };
        }
    }
}
