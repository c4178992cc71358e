using System.Numerics;
using System.Runtime.CompilerServices;

namespace InferKit.AspNetCore.Protocol;

/// <summary>
/// Exact fast path for the JSON numbers a tensor body is mostly made of ("0.125", "-3", "1.5e-3"): when every
/// significant digit fits in the target type's significand and the decimal exponent is small, the value is one IEEE
/// multiplication or division of two exactly representable numbers, which the hardware rounds correctly (Clinger's
/// fast path). It then equals what <see cref="float.Parse(string)"/> gives. Anything else (long digit strings, large
/// exponents, malformed text) returns false and the caller falls back to the general parser.
/// </summary>
internal static class DecimalFastPath
{
    // Powers of ten exactly representable as float (5^10 < 2^24) and as double (5^22 < 2^53).
    private static readonly float[] s_float10 = [1e0f, 1e1f, 1e2f, 1e3f, 1e4f, 1e5f, 1e6f, 1e7f, 1e8f, 1e9f, 1e10f];
    private static readonly double[] s_double10 =
    [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
        1e21, 1e22,
    ];

    /// <summary>Parses <paramref name="text"/> (a JSON number) as a float when the fast path applies.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryParseSingle(ReadOnlySpan<byte> text, out float value) => TryParse(text, 1UL << 24, s_float10, out value);

    /// <summary>Parses <paramref name="text"/> (a JSON number) as a double when the fast path applies.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryParseDouble(ReadOnlySpan<byte> text, out double value) => TryParse(text, 1UL << 53, s_double10, out value);

    /// <summary>
    /// The fast path for one binary type: <paramref name="maxSignificand"/> is 2^(significand bits) and
    /// <paramref name="powers"/> the powers of ten that type holds exactly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryParse<T>(ReadOnlySpan<byte> text, ulong maxSignificand, T[] powers, out T value)
        where T : struct, IFloatingPointIeee754<T>
    {
        if (TryDecompose(text, maxSignificand, out ulong significand, out int exponent, out bool negative)
            && exponent > -powers.Length && exponent < powers.Length)
        {
            T f = T.CreateTruncating(significand); // exact: the significand fits
            f = exponent < 0 ? f / powers[-exponent] : f * powers[exponent];
            value = negative ? -f : f;
            return true;
        }

        value = T.Zero;
        return false;
    }

    /// <summary>
    /// Splits a JSON number into sign, an integer significand of all its digits and a decimal exponent. False when
    /// the significand would exceed <paramref name="maxSignificand"/>, the exponent part is out of a small range, or
    /// the text is not a plain JSON number.
    /// </summary>
    private static bool TryDecompose(ReadOnlySpan<byte> text, ulong maxSignificand, out ulong significand, out int exponent, out bool negative)
    {
        significand = 0;
        exponent = 0;
        negative = false;
        int i = 0;
        if (text.Length == 0)
        {
            return false;
        }

        if (text[0] == (byte)'-')
        {
            negative = true;
            i = 1;
        }

        if (!TryDigits(text, ref i, ref significand, maxSignificand, out int digits) || digits == 0)
        {
            return false;
        }

        if (i < text.Length && text[i] == (byte)'.')
        {
            i++;
            if (!TryDigits(text, ref i, ref significand, maxSignificand, out int fraction) || fraction == 0)
            {
                return false;
            }

            exponent = -fraction;
        }

        if (i < text.Length && (text[i] | 0x20) == (byte)'e')
        {
            i++;
            bool negativeExponent = false;
            if (i < text.Length && (text[i] == (byte)'-' || text[i] == (byte)'+'))
            {
                negativeExponent = text[i] == (byte)'-';
                i++;
            }

            int e = 0;
            int start = i;
            for (; i < text.Length; i++)
            {
                uint d = (uint)(text[i] - '0');
                if (d > 9 || e > 1000)
                {
                    break;
                }

                e = (e * 10) + (int)d;
            }

            if (i == start || e > 1000)
            {
                return false;
            }

            exponent += negativeExponent ? -e : e;
        }

        return i == text.Length;
    }

    /// <summary>Appends the run of digits at <paramref name="i"/> to the significand; false once it exceeds the maximum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryDigits(ReadOnlySpan<byte> text, ref int i, ref ulong significand, ulong maxSignificand, out int count)
    {
        int start = i;
        for (; i < text.Length; i++)
        {
            uint d = (uint)(text[i] - '0');
            if (d > 9)
            {
                break;
            }

            significand = (significand * 10) + d;
            if (significand > maxSignificand)
            {
                count = i - start;
                return false;
            }
        }

        count = i - start;
        return true;
    }
}
