namespace InferKit.Tensors;

/// <summary>Copies between batch tensors: joining requests along axis 0 (with padding) and cutting outputs back apart.</summary>
internal static class BatchTensorOps
{
    /// <summary>
    /// Copies a box of shape <paramref name="box"/> from <paramref name="src"/> (laid out as <paramref name="srcShape"/>,
    /// starting at row <paramref name="srcRow"/> of axis 0) into <paramref name="dst"/> (laid out as <paramref name="dstShape"/>,
    /// starting at row <paramref name="dstRow"/>). Each dimension of the box is at most the matching source and destination dimension.
    /// </summary>
    public static void CopyBox(ReadOnlySpan<byte> src, ReadOnlySpan<long> srcShape, long srcRow, Span<byte> dst, ReadOnlySpan<long> dstShape, long dstRow, ReadOnlySpan<long> box, int elementSize)
    {
        int rank = box.Length;
        if (rank == 0)
        {
            src[..elementSize].CopyTo(dst);
            return;
        }

        // Fast path: the trailing dimensions agree everywhere, so the box is one contiguous run.
        bool contiguous = true;
        long rowElements = 1;
        for (int a = 1; a < rank; a++)
        {
            if (box[a] != srcShape[a] || box[a] != dstShape[a])
            {
                contiguous = false;
                break;
            }

            rowElements *= box[a];
        }

        if (contiguous)
        {
            long rowBytes = rowElements * elementSize;
            src.Slice(checked((int)(srcRow * rowBytes)), checked((int)(box[0] * rowBytes)))
               .CopyTo(dst.Slice(checked((int)(dstRow * rowBytes))));
            return;
        }

        Span<long> srcStride = stackalloc long[rank];
        Span<long> dstStride = stackalloc long[rank];
        srcStride[rank - 1] = 1;
        dstStride[rank - 1] = 1;
        for (int a = rank - 2; a >= 0; a--)
        {
            srcStride[a] = srcStride[a + 1] * srcShape[a + 1];
            dstStride[a] = dstStride[a + 1] * dstShape[a + 1];
        }

        int runBytes = checked((int)(box[rank - 1] * elementSize));
        Span<long> index = stackalloc long[rank];
        index.Clear();
        if (runBytes == 0)
        {
            return;
        }

        for (int a = 0; a < rank - 1; a++)
        {
            if (box[a] == 0)
            {
                return;
            }
        }

        while (true)
        {
            long s = (srcRow + index[0]) * srcStride[0];
            long d = (dstRow + index[0]) * dstStride[0];
            for (int a = 1; a < rank - 1; a++)
            {
                s += index[a] * srcStride[a];
                d += index[a] * dstStride[a];
            }

            src.Slice(checked((int)(s * elementSize)), runBytes).CopyTo(dst.Slice(checked((int)(d * elementSize)), runBytes));

            int axis = rank - 2;
            while (axis >= 0)
            {
                if (++index[axis] < box[axis])
                {
                    break;
                }

                index[axis] = 0;
                axis--;
            }

            if (axis < 0)
            {
                return;
            }
        }
    }

    /// <summary>The same for string tensors (elements are references, copied one by one).</summary>
    public static void CopyBox(ReadOnlySpan<string> src, ReadOnlySpan<long> srcShape, long srcRow, Span<string> dst, ReadOnlySpan<long> dstShape, long dstRow, ReadOnlySpan<long> box)
    {
        int rank = box.Length;
        if (rank == 0)
        {
            dst[0] = src[0];
            return;
        }

        Span<long> srcStride = stackalloc long[rank];
        Span<long> dstStride = stackalloc long[rank];
        srcStride[rank - 1] = 1;
        dstStride[rank - 1] = 1;
        for (int a = rank - 2; a >= 0; a--)
        {
            srcStride[a] = srcStride[a + 1] * srcShape[a + 1];
            dstStride[a] = dstStride[a + 1] * dstShape[a + 1];
        }

        long total = Tensor.ElementCountOf(box);
        Span<long> index = stackalloc long[rank];
        index.Clear();
        for (long n = 0; n < total; n++)
        {
            long s = (srcRow + index[0]) * srcStride[0];
            long d = (dstRow + index[0]) * dstStride[0];
            for (int a = 1; a < rank; a++)
            {
                s += index[a] * srcStride[a];
                d += index[a] * dstStride[a];
            }

            dst[(int)d] = src[(int)s];
            for (int a = rank - 1; a >= 0; a--)
            {
                if (++index[a] < box[a])
                {
                    break;
                }

                index[a] = 0;
            }
        }
    }

    /// <summary>Fills <paramref name="dst"/> with repeats of one element's bytes.</summary>
    public static void Fill(Span<byte> dst, ReadOnlySpan<byte> element)
    {
        bool zero = true;
        foreach (var b in element)
        {
            if (b != 0)
            {
                zero = false;
                break;
            }
        }

        if (zero)
        {
            dst.Clear();
            return;
        }

        for (int i = 0; i + element.Length <= dst.Length; i += element.Length)
        {
            element.CopyTo(dst[i..]);
        }
    }

    /// <summary>The bytes of <paramref name="value"/> as one element of <paramref name="type"/>.</summary>
    public static byte[] ElementBytes(TensorElementType type, double value)
    {
        var bytes = new byte[Math.Max(1, type.SizeOf())];
        var span = bytes.AsSpan();
        switch (type)
        {
            case TensorElementType.Float32: BitConverter.TryWriteBytes(span, (float)value); break;
            case TensorElementType.Float64: BitConverter.TryWriteBytes(span, value); break;
            case TensorElementType.Float16: BitConverter.TryWriteBytes(span, BitConverter.HalfToUInt16Bits((Half)value)); break;
            case TensorElementType.BFloat16: BitConverter.TryWriteBytes(span, ((BFloat16)(float)value).Bits); break;
            case TensorElementType.Int8: span[0] = unchecked((byte)(sbyte)value); break;
            case TensorElementType.UInt8: span[0] = (byte)value; break;
            case TensorElementType.Bool: span[0] = value != 0 ? (byte)1 : (byte)0; break;
            case TensorElementType.Int16: BitConverter.TryWriteBytes(span, (short)value); break;
            case TensorElementType.UInt16: BitConverter.TryWriteBytes(span, (ushort)value); break;
            case TensorElementType.Int32: BitConverter.TryWriteBytes(span, (int)value); break;
            case TensorElementType.UInt32: BitConverter.TryWriteBytes(span, (uint)value); break;
            case TensorElementType.Int64: BitConverter.TryWriteBytes(span, (long)value); break;
            case TensorElementType.UInt64: BitConverter.TryWriteBytes(span, (ulong)value); break;
            default: break;
        }

        return bytes;
    }
}
