using System.Runtime.InteropServices;

namespace InferKit.Tensors;

/// <summary>A 16-bit brain floating point number: the upper half of an IEEE float32. Conversions round to nearest even.</summary>
[StructLayout(LayoutKind.Sequential, Size = 2)]
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>Creates a value from its raw bits.</summary>
    public BFloat16(ushort bits) => Bits = bits;

    /// <summary>The raw 16 bits.</summary>
    public ushort Bits { get; }

    /// <summary>Converts a float, rounding to nearest even; NaN stays NaN.</summary>
    public static explicit operator BFloat16(float value)
    {
        if (float.IsNaN(value))
        {
            return new BFloat16(0x7FC0);
        }

        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return new BFloat16((ushort)((bits + rounding) >> 16));
    }

    /// <summary>Widens to float exactly.</summary>
    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.Bits << 16);

    /// <inheritdoc/>
    public bool Equals(BFloat16 other) => Bits == other.Bits;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => Bits;

    /// <inheritdoc/>
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Compares raw bits.</summary>
    public static bool operator ==(BFloat16 left, BFloat16 right) => left.Equals(right);

    /// <summary>Compares raw bits.</summary>
    public static bool operator !=(BFloat16 left, BFloat16 right) => !left.Equals(right);
}
