using InferKit.Tensors;

namespace InferKit.Tests.Tensors;

public sealed class ElementTypeTests
{
    public static TheoryData<TensorElementType> AllTypes()
    {
        var data = new TheoryData<TensorElementType>();
        foreach (var t in Enum.GetValues<TensorElementType>())
        {
            if (t != TensorElementType.Undefined)
            {
                data.Add(t);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void Protocol_names_round_trip(TensorElementType type)
    {
        var name = type.ToProtocolName();
        Assert.True(TensorElementTypes.TryParseProtocolName(name, out var parsed), name);
        Assert.Equal(type, parsed);
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void Clr_type_size_and_Of_agree(TensorElementType type)
    {
        var clr = type.ClrType();
        var of = typeof(TensorElementTypes).GetMethod(nameof(TensorElementTypes.Of))!.MakeGenericMethod(clr);
        Assert.Equal(type, (TensorElementType)of.Invoke(null, null)!);
        if (type == TensorElementType.String)
        {
            Assert.Equal(0, type.SizeOf());
        }
        else
        {
            Assert.Equal(System.Runtime.InteropServices.Marshal.SizeOf(clr == typeof(bool) ? typeof(byte) : clr == typeof(Half) ? typeof(short) : clr), type.SizeOf());
        }
    }

    [Theory]
    [InlineData("FP32", TensorElementType.Float32)]
    [InlineData("BYTES", TensorElementType.String)]
    [InlineData("BOOL", TensorElementType.Bool)]
    [InlineData("BF16", TensorElementType.BFloat16)]
    public void Known_protocol_names_parse(string name, TensorElementType expected)
    {
        Assert.True(TensorElementTypes.TryParseProtocolName(name, out var parsed));
        Assert.Equal(expected, parsed);
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("FLOAT")]
    [InlineData("")]
    public void Unknown_protocol_names_do_not_parse(string name)
    {
        Assert.False(TensorElementTypes.TryParseProtocolName(name, out var parsed));
        Assert.Equal(TensorElementType.Undefined, parsed);
    }

    [Fact]
    public void A_type_that_is_not_an_element_type_is_refused_with_the_list_of_types()
    {
        var ex = Assert.Throws<NotSupportedException>(() => TensorElementTypes.Of<decimal>());
        Assert.Contains("Decimal", ex.Message, StringComparison.Ordinal);
        Assert.Contains("float", ex.Message, StringComparison.Ordinal);
        Assert.Throws<NotSupportedException>(() => Tensor.Create("x", new decimal[1], 1));
    }
}
