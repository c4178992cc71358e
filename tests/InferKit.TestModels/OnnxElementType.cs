namespace InferKit.TestModels;

/// <summary>
/// ONNX tensor element types that the test models use; the values are ONNX's <c>TensorProto.DataType</c> numbers.
/// </summary>
#pragma warning disable CA1720 // The members are named after the element types on purpose.
public enum OnnxElementType
{
    /// <summary>32-bit IEEE float.</summary>
    Float = 1,

    /// <summary>Unsigned 8-bit integer.</summary>
    UInt8 = 2,

    /// <summary>Signed 8-bit integer.</summary>
    Int8 = 3,

    /// <summary>Unsigned 16-bit integer.</summary>
    UInt16 = 4,

    /// <summary>Signed 16-bit integer.</summary>
    Int16 = 5,

    /// <summary>Signed 32-bit integer.</summary>
    Int32 = 6,

    /// <summary>Signed 64-bit integer.</summary>
    Int64 = 7,

    /// <summary>UTF-8 string.</summary>
    String = 8,

    /// <summary>Boolean, one byte per element.</summary>
    Bool = 9,

    /// <summary>16-bit IEEE half-precision float.</summary>
    Float16 = 10,

    /// <summary>64-bit IEEE float.</summary>
    Double = 11,

    /// <summary>Unsigned 32-bit integer.</summary>
    UInt32 = 12,

    /// <summary>Unsigned 64-bit integer.</summary>
    UInt64 = 13,

    /// <summary>Brain float: the upper 16 bits of a 32-bit float.</summary>
    BFloat16 = 16,
}
#pragma warning restore CA1720

/// <summary>Helpers over <see cref="OnnxElementType"/>.</summary>
public static class OnnxElementTypes
{
    /// <summary>Every element type that InferKit supports and that an identity model exists for.</summary>
    public static IReadOnlyList<OnnxElementType> All { get; } =
    [
        OnnxElementType.Float, OnnxElementType.Float16, OnnxElementType.BFloat16, OnnxElementType.Double,
        OnnxElementType.Int8, OnnxElementType.Int16, OnnxElementType.Int32, OnnxElementType.Int64,
        OnnxElementType.UInt8, OnnxElementType.UInt16, OnnxElementType.UInt32, OnnxElementType.UInt64,
        OnnxElementType.Bool, OnnxElementType.String,
    ];

    /// <summary>Bytes per element, or 0 for <see cref="OnnxElementType.String"/>.</summary>
    /// <param name="type">The element type.</param>
    /// <returns>The size of one element in bytes.</returns>
    public static int SizeOf(this OnnxElementType type) => type switch
    {
        OnnxElementType.Float or OnnxElementType.Int32 or OnnxElementType.UInt32 => 4,
        OnnxElementType.Double or OnnxElementType.Int64 or OnnxElementType.UInt64 => 8,
        OnnxElementType.Float16 or OnnxElementType.BFloat16 or OnnxElementType.Int16 or OnnxElementType.UInt16 => 2,
        OnnxElementType.Int8 or OnnxElementType.UInt8 or OnnxElementType.Bool => 1,
        OnnxElementType.String => 0,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown ONNX element type."),
    };
}
