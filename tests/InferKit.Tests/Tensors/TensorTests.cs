using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using InferKit.Tensors;

namespace InferKit.Tests.Tensors;

public sealed class TensorTests
{
    [Fact]
    public void Create_from_an_array_views_it_without_copying()
    {
        var data = new float[] { 1, 2, 3, 4, 5, 6 };
        var tensor = Tensor.Create("x", data, 2, 3);

        Assert.Equal("x", tensor.Name);
        Assert.Equal(TensorElementType.Float32, tensor.ElementType);
        Assert.Equal(new long[] { 2, 3 }, tensor.Shape.ToArray());
        Assert.Equal(2, tensor.Rank);
        Assert.Equal(6, tensor.ElementCount);
        Assert.Equal(24, tensor.ByteLength);
        Assert.True(Unsafe.AreSame(ref MemoryMarshal.GetReference(tensor.GetSpan<float>()), ref data[0]));

        data[4] = 42;
        Assert.Equal(42, tensor.GetSpan<float>()[4]);
    }

    [Fact]
    public void Create_from_a_memory_slice_views_the_slice_without_copying()
    {
        var data = new long[10];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = i * 10;
        }

        var tensor = Tensor.Create("ids", new ReadOnlyMemory<long>(data, 3, 6), 2, 3);

        Assert.Equal(TensorElementType.Int64, tensor.ElementType);
        Assert.Equal(new long[] { 30, 40, 50, 60, 70, 80 }, tensor.ToArray<long>());
        Assert.True(Unsafe.AreSame(ref MemoryMarshal.GetReference(tensor.GetSpan<long>()), ref data[3]));
        Assert.True(Unsafe.AreSame(ref MemoryMarshal.GetReference(tensor.Bytes), ref Unsafe.As<long, byte>(ref data[3])));
        Assert.Equal(48, tensor.Bytes.Length);
    }

    [Fact]
    public void ToArray_copies_so_the_copy_outlives_changes_to_the_source()
    {
        var data = new int[] { 1, 2, 3 };
        var tensor = Tensor.Create("x", data, 3);
        var copy = tensor.ToArray<int>();
        data[0] = 99;
        Assert.Equal(new[] { 1, 2, 3 }, copy);
    }

    [Fact]
    public void The_shape_is_copied_at_creation()
    {
        var shape = new long[] { 2, 2 };
        var tensor = Tensor.Create("x", new double[4], shape);
        shape[0] = 4;
        shape[1] = 1;
        Assert.Equal(new long[] { 2, 2 }, tensor.Shape.ToArray());
    }

    [Fact]
    public void Shape_and_length_mismatch_names_the_tensor_and_both_counts()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Create("pixels", new float[76], 7, 11));
        Assert.Contains("'pixels'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("77", ex.Message, StringComparison.Ordinal);
        Assert.Contains("76", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[7,11]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Memory_overload_checks_the_length_of_the_slice_not_of_the_array()
    {
        var data = new float[100];
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Create("slice", new ReadOnlyMemory<float>(data, 0, 5), 2, 3));
        Assert.Contains("'slice'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("6", ex.Message, StringComparison.Ordinal);
        Assert.Contains("5", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("100", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_negative_dimension_is_refused_with_its_index()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Create("x", new float[4], 2, -2));
        Assert.Contains("'x'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("dimension 1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_empty_name_is_refused()
    {
        Assert.ThrowsAny<ArgumentException>(() => Tensor.Create(string.Empty, new float[1], 1));
    }

    [Fact]
    public void Typed_access_refuses_the_wrong_type_and_names_both_types()
    {
        var tensor = Tensor.Create("x", new float[] { 1, 2 }, 2);

        var span = Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<int>().Length);
        Assert.Contains("'x'", span.Message, StringComparison.Ordinal);
        Assert.Contains("Float32", span.Message, StringComparison.Ordinal);
        Assert.Contains("Int32", span.Message, StringComparison.Ordinal);

        var array = Assert.Throws<InvalidOperationException>(() => tensor.ToArray<double>());
        Assert.Contains("Float64", array.Message, StringComparison.Ordinal);

        // Same size, different type: still refused.
        Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<uint>().Length);
        Assert.Throws<InvalidOperationException>(() => tensor.GetStrings().Length);
    }

    [Fact]
    public void String_tensors_hold_strings_and_refuse_byte_access()
    {
        var strings = new[] { "a", "héllo", string.Empty, "日本語" };
        var tensor = Tensor.Create("text", strings, 2, 2);

        Assert.Equal(TensorElementType.String, tensor.ElementType);
        Assert.Equal(4, tensor.ElementCount);
        Assert.Equal(0, tensor.ByteLength);
        Assert.Equal(strings, tensor.GetStrings().ToArray());
        Assert.Equal(strings, tensor.ToArray<string>());
        var ex = Assert.Throws<InvalidOperationException>(() => tensor.Bytes.Length);
        Assert.Contains("'text'", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<byte>().Length);
    }

    [Fact]
    public void Bool_tensors_are_one_byte_per_element()
    {
        var tensor = Tensor.Create("mask", new[] { true, false, true }, 3);
        Assert.Equal(TensorElementType.Bool, tensor.ElementType);
        Assert.Equal(new byte[] { 1, 0, 1 }, tensor.Bytes.ToArray());
        Assert.Equal(new[] { true, false, true }, tensor.ToArray<bool>());
    }

    [Fact]
    public void Scalars_and_empty_tensors_are_allowed()
    {
        var scalar = Tensor.Create("s", new[] { 3.5 }, ReadOnlySpan<long>.Empty);
        Assert.Equal(0, scalar.Rank);
        Assert.Equal(1, scalar.ElementCount);
        Assert.Equal(3.5, scalar.GetSpan<double>()[0]);

        var empty = Tensor.Create("e", Array.Empty<float>(), 0, 4);
        Assert.Equal(0, empty.ElementCount);
        Assert.Equal(new long[] { 0, 4 }, empty.Shape.ToArray());
        Assert.Empty(empty.ToArray<float>());
    }

    [Fact]
    public void The_one_dimensional_overload_takes_the_array_length()
    {
        var tensor = Tensor.Create("v", new short[] { 1, 2, 3, 4, 5 });
        Assert.Equal(new long[] { 5 }, tensor.Shape.ToArray());
        Assert.Equal(TensorElementType.Int16, tensor.ElementType);
    }

    [Fact]
    public void FromBytes_views_little_endian_bytes_without_copying()
    {
        var bytes = new byte[16];
        BitConverter.TryWriteBytes(bytes.AsSpan(0), 1.5f);
        BitConverter.TryWriteBytes(bytes.AsSpan(4), -2f);
        BitConverter.TryWriteBytes(bytes.AsSpan(8), 1e9f);
        var tensor = Tensor.FromBytes("x", TensorElementType.Float32, new ReadOnlyMemory<byte>(bytes, 0, 12), 1, 3);

        Assert.Equal(new[] { 1.5f, -2f, 1e9f }, tensor.ToArray<float>());
        Assert.True(Unsafe.AreSame(ref MemoryMarshal.GetReference(tensor.Bytes), ref bytes[0]));
    }

    [Fact]
    public void FromBytes_refuses_a_bool_byte_other_than_0_or_1_naming_the_element()
    {
        // ONNX Runtime reads such a byte as neither value: Not(2) came back as 3 (true), and in .NET a bool of 2 is truthy
        // yet not equal to true. Protocol binary data for BOOL is one byte per element, 0 or 1.
        var ex = Assert.Throws<ArgumentException>(() => Tensor.FromBytes("mask", TensorElementType.Bool, new byte[] { 1, 0, 1, 2, 0, 1 }, 2, 3));
        Assert.Contains("'mask'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("element 3", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2", ex.Message, StringComparison.Ordinal);

        var ok = Tensor.FromBytes("mask", TensorElementType.Bool, new byte[] { 1, 0, 1, 1, 0, 0, 9 }.AsMemory(0, 6), 2, 3);
        Assert.Equal(new[] { true, false, true, true, false, false }, ok.ToArray<bool>());
        Assert.Equal(0, Tensor.FromBytes("mask", TensorElementType.Bool, ReadOnlyMemory<byte>.Empty, 0, 3).ElementCount);

        // A byte of another type is any value.
        Assert.Equal(new byte[] { 2, 255 }, Tensor.FromBytes("u", TensorElementType.UInt8, new byte[] { 2, 255 }, 2).ToArray<byte>());
    }

    [Fact]
    public void FromBytes_refuses_a_partial_element_a_shape_mismatch_and_strings()
    {
        var partial = Assert.Throws<ArgumentException>(() => Tensor.FromBytes("x", TensorElementType.Float32, new byte[10], 2));
        Assert.Contains("'x'", partial.Message, StringComparison.Ordinal);
        Assert.Contains("10", partial.Message, StringComparison.Ordinal);

        var mismatch = Assert.Throws<ArgumentException>(() => Tensor.FromBytes("y", TensorElementType.Int64, new byte[24], 2, 2));
        Assert.Contains("'y'", mismatch.Message, StringComparison.Ordinal);
        Assert.Contains("4", mismatch.Message, StringComparison.Ordinal);
        Assert.Contains("3", mismatch.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => Tensor.FromBytes("z", TensorElementType.String, new byte[8], 1));
    }

    [Fact]
    public void WithName_renames_and_shares_the_data()
    {
        var data = new byte[] { 1, 2, 3 };
        var tensor = Tensor.Create("a", data, 3).WithName("b");
        Assert.Equal("b", tensor.Name);
        data[1] = 7;
        Assert.Equal(new byte[] { 1, 7, 3 }, tensor.ToArray<byte>());
    }

    [Fact]
    public void A_default_tensor_is_recognised_and_refused_by_requests()
    {
        Tensor none = default;
        Assert.True(none.IsDefault);
        Assert.Equal(0, none.Rank);
        var ex = Assert.Throws<ArgumentException>(() => new InferenceRequest(Tensor.Create("x", new float[1], 1), none));
        Assert.Contains("1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ElementCountOf_and_FormatShape()
    {
        Assert.Equal(24, Tensor.ElementCountOf([2, 3, 4]));
        Assert.Equal(1, Tensor.ElementCountOf([]));
        Assert.Equal(0, Tensor.ElementCountOf([5, 0]));
        Assert.Equal(-1, Tensor.ElementCountOf([-1, 4]));
        Assert.Equal(-1, Tensor.ElementCountOf([long.MaxValue, 2]));

        // At the edge of a long: the largest products that fit, and the smallest that do not (the sign bit, the high half).
        Assert.Equal(long.MaxValue, Tensor.ElementCountOf([long.MaxValue, 1]));
        Assert.Equal(3037000499L * 3037000499L, Tensor.ElementCountOf([3037000499L, 3037000499L]));
        Assert.Equal(-1, Tensor.ElementCountOf([3037000500L, 3037000500L]));
        Assert.Equal(-1, Tensor.ElementCountOf([1L << 62, 2]));
        Assert.Equal(-1, Tensor.ElementCountOf([1L << 32, 1L << 32]));
        Assert.Equal(-1, Tensor.ElementCountOf([1L << 32, 1L << 32, 0, -1]));
        Assert.Equal("[?,3,224,224]", Tensor.FormatShape([-1, 3, 224, 224]));
        Assert.Equal("[]", Tensor.FormatShape([]));
        Assert.Equal("x: Float32[2,3]", Tensor.Create("x", new float[6], 2, 3).ToString());
    }

    [Fact]
    public void A_shape_with_a_zero_dimension_holds_no_elements_however_large_its_other_dimensions()
    {
        // The product is 0 whatever comes before the 0: it never overflows, so the empty tensor is valid.
        Assert.Equal(0, Tensor.ElementCountOf([1L << 40, 1L << 40, 0]));
        Assert.Equal(-1, Tensor.ElementCountOf([1L << 40, 1L << 40, -1]));
        var empty = Tensor.Create("e", Array.Empty<float>(), 1L << 40, 1L << 40, 0);
        Assert.Equal(0, empty.ElementCount);
        Assert.Equal(new[] { 1L << 40, 1L << 40, 0 }, empty.Shape.ToArray());
    }

    [Fact]
    public void A_shape_whose_element_count_overflows_is_refused_as_too_large()
    {
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Create("x", new float[4], long.MaxValue, 2));
        Assert.Contains("'x'", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"[{long.MaxValue},2]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("overflows", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("-1", ex.Message, StringComparison.Ordinal);

        var bytes = Assert.Throws<ArgumentException>(() => Tensor.FromBytes("b", TensorElementType.Int32, new byte[8], 1L << 40, 1L << 40));
        Assert.Contains("overflows", bytes.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Data_over_2_GiB_is_refused_and_a_slice_far_into_such_an_array_is_viewed_as_a_copy()
    {
        // 2^28 + 4 longs: 2 GiB and 32 bytes (uninitialized: the pages are never touched but by the slice below).
        var big = GC.AllocateUninitializedArray<long>((1 << 28) + 4);
        var ex = Assert.Throws<ArgumentException>(() => Tensor.Create("big", big, big.Length));
        Assert.Contains("'big'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("2147483680 bytes", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"at most {int.MaxValue} bytes", ex.Message, StringComparison.Ordinal);

        // A small slice whose byte offset does not fit an int: still a valid tensor.
        long[] expected = [7, 0, long.MinValue, -9];
        expected.CopyTo(big, 1 << 28);
        var tail = Tensor.Create("tail", new ReadOnlyMemory<long>(big, 1 << 28, 4), 2, 2);
        Assert.Equal(32, tail.ByteLength);
        Assert.Equal(expected, tail.ToArray<long>());
    }

    [Fact]
    public void Float16_tensors_hold_half_bits_little_endian()
    {
        var values = new[] { (Half)1.0f, (Half)(-2.5f), Half.MaxValue, Half.Epsilon };
        var tensor = Tensor.Create("h", values, 4);

        Assert.Equal(TensorElementType.Float16, tensor.ElementType);
        Assert.Equal(8, tensor.ByteLength);
        Assert.Equal(new byte[] { 0x00, 0x3C }, tensor.Bytes[..2].ToArray()); // 1.0 is 0x3C00
        Assert.Equal(values, tensor.ToArray<Half>());
        Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<BFloat16>().Length);
        Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<short>().Length);
    }

    [Fact]
    public void BFloat16_tensors_hold_the_upper_float_bits()
    {
        var values = new[] { (BFloat16)1.0f, (BFloat16)(-2.5f), (BFloat16)3.0e38f };
        var tensor = Tensor.Create("b", values, 3);

        Assert.Equal(TensorElementType.BFloat16, tensor.ElementType);
        Assert.Equal(new byte[] { 0x80, 0x3F }, tensor.Bytes[..2].ToArray()); // 1.0f is 0x3F800000
        Assert.Equal(values, tensor.ToArray<BFloat16>());
        Assert.Throws<InvalidOperationException>(() => tensor.GetSpan<Half>().Length);
    }
}
