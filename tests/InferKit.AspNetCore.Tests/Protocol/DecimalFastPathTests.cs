using System.Globalization;
using System.Text;
using InferKit.AspNetCore.Protocol;
using Xunit;

namespace InferKit.AspNetCore.Tests.Protocol;

public sealed class DecimalFastPathTests
{
    [Theory]
    [InlineData("0")]
    [InlineData("-0")]
    [InlineData("1")]
    [InlineData("-3")]
    [InlineData("0.1")]
    [InlineData("0.010")]
    [InlineData("2.5")]
    [InlineData("-0.0000000001")]
    [InlineData("16777216")]
    [InlineData("1677721.6")]
    [InlineData("4e2")]
    [InlineData("4E+2")]
    [InlineData("1.5e-3")]
    [InlineData("7e10")]
    [InlineData("123456e-10")]
    public void Takes_short_decimals_and_gives_the_runtime_parsers_exact_float(string text)
    {
        Assert.True(DecimalFastPath.TryParseSingle(Encoding.ASCII.GetBytes(text), out float value));
        Assert.Equal(BitConverter.SingleToInt32Bits(float.Parse(text, CultureInfo.InvariantCulture)), BitConverter.SingleToInt32Bits(value));
    }

    [Theory]
    [InlineData("16777217")] // one past 2^24: not exact in a float significand
    [InlineData("0.123456789")]
    [InlineData("1e11")]
    [InlineData("1e-11")]
    [InlineData("3.4028235e38")]
    [InlineData("1e99999")]
    [InlineData("")]
    [InlineData("-")]
    [InlineData("1.")]
    [InlineData(".5")]
    [InlineData("1e")]
    [InlineData("1e+")]
    [InlineData("1x")]
    public void Declines_what_it_cannot_do_exactly_or_is_not_a_plain_number(string text) =>
        Assert.False(DecimalFastPath.TryParseSingle(Encoding.ASCII.GetBytes(text), out _));

    [Fact]
    public void Random_decimals_parse_bit_for_bit_like_the_runtime_for_float_and_double()
    {
        var rng = new Random(20261128);
        int taken = 0;
        for (int i = 0; i < 200_000; i++)
        {
            string text = RandomNumber(rng);
            var bytes = Encoding.ASCII.GetBytes(text);
            if (DecimalFastPath.TryParseSingle(bytes, out float f))
            {
                taken++;
                float expected = float.Parse(text, CultureInfo.InvariantCulture);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(f), $"'{text}': {f:R} instead of {expected:R}");
            }

            if (DecimalFastPath.TryParseDouble(bytes, out double d))
            {
                double expected = double.Parse(text, CultureInfo.InvariantCulture);
                Assert.True(BitConverter.DoubleToInt64Bits(expected) == BitConverter.DoubleToInt64Bits(d), $"'{text}': {d:R} instead of {expected:R}");
            }
        }

        // The generator mostly makes numbers the fast path should take; make sure the comparison above ran on them.
        Assert.True(taken > 100_000, $"only {taken} of 200000 took the fast path");
    }

    private static string RandomNumber(Random rng)
    {
        var sb = new StringBuilder();
        if (rng.Next(2) == 0)
        {
            sb.Append('-');
        }

        int intDigits = rng.Next(1, 8);
        sb.Append(rng.Next(1, 10));
        for (int k = 1; k < intDigits; k++)
        {
            sb.Append(rng.Next(10));
        }

        if (rng.Next(4) != 0)
        {
            sb.Append('.');
            int fraction = rng.Next(1, 9);
            for (int k = 0; k < fraction; k++)
            {
                sb.Append(rng.Next(10));
            }
        }

        if (rng.Next(5) == 0)
        {
            sb.Append(rng.Next(2) == 0 ? 'e' : 'E').Append(rng.Next(3) switch { 0 => "-", 1 => "+", _ => "" }).Append(rng.Next(0, 14));
        }

        return sb.ToString();
    }
}
