using InferKit.Tensors;

namespace InferKit.Tests.Tensors;

public sealed class BFloat16Tests
{
    [Theory]
    [InlineData(1.0f, 0x3F80)]
    [InlineData(-2.0f, 0xC000)]
    [InlineData(0.0f, 0x0000)]
    [InlineData(-0.0f, 0x8000)]
    [InlineData(0.5f, 0x3F00)]
    [InlineData(float.PositiveInfinity, 0x7F80)]
    [InlineData(float.NegativeInfinity, 0xFF80)]
    public void Exact_values_convert_to_their_upper_bits_and_back(float value, int bits)
    {
        var b = (BFloat16)value;
        Assert.Equal((ushort)bits, b.Bits);
        Assert.Equal(BitConverter.SingleToUInt32Bits(value), BitConverter.SingleToUInt32Bits((float)b));
    }

    [Theory]
    [InlineData(0x3F808000u, 0x3F80)] // exactly half way, lower neighbour even: stays
    [InlineData(0x3F818000u, 0x3F82)] // exactly half way, lower neighbour odd: rounds up to even
    [InlineData(0x3F808001u, 0x3F81)] // just above half way: up
    [InlineData(0x3F807FFFu, 0x3F80)] // just below half way: down
    [InlineData(0xBF80C000u, 0xBF81)] // negative values round by magnitude
    [InlineData(0x7F7FFFFFu, 0x7F80)] // float.MaxValue overflows to infinity
    [InlineData(0x00000001u, 0x0000)] // the smallest subnormal rounds to zero
    public void Conversion_rounds_to_nearest_even(uint floatBits, int expectedBits)
    {
        var b = (BFloat16)BitConverter.UInt32BitsToSingle(floatBits);
        Assert.Equal((ushort)expectedBits, b.Bits);
    }

    [Fact]
    public void NaN_stays_NaN()
    {
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));

        // A NaN whose payload sits only in the low bits must not turn into infinity by truncation.
        var lowPayloadNaN = BitConverter.UInt32BitsToSingle(0x7F800001);
        Assert.True(float.IsNaN((float)(BFloat16)lowPayloadNaN));
    }

    [Fact]
    public void Round_trip_error_is_within_half_a_unit_of_the_eighth_bit()
    {
        var random = new Random(3);
        for (int i = 0; i < 10_000; i++)
        {
            var value = (float)((random.NextDouble() - 0.5) * Math.Pow(10, random.Next(-20, 20)));
            var back = (float)(BFloat16)value;
            Assert.True(Math.Abs(back - value) <= Math.Abs(value) * (1.0 / 256), $"{value} came back as {back}");
        }
    }

    [Fact]
    public void Equality_and_formatting()
    {
        Assert.Equal((BFloat16)1.5f, new BFloat16(0x3FC0));
        Assert.True((BFloat16)1.5f == new BFloat16(0x3FC0));
        Assert.True((BFloat16)1.5f != (BFloat16)2f);
        Assert.Equal(new BFloat16(0x3FC0).GetHashCode(), ((BFloat16)1.5f).GetHashCode());
        Assert.Equal("1.5", ((BFloat16)1.5f).ToString());
        Assert.False(((BFloat16)1.5f).Equals((object)1.5f));
    }

    [Fact]
    public void Half_conversions_used_for_Float16_tensors_round_trip_exact_values()
    {
        foreach (var v in new[] { 0f, 1f, -1f, 0.5f, 65504f, 6.1035156E-05f })
        {
            Assert.Equal(v, (float)(Half)v);
        }

        Assert.True(Half.IsPositiveInfinity((Half)70000f));
    }
}
