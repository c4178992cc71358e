using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace InferKit.Tensors;

/// <summary>
/// A named, typed, shaped block of data: one input or output of a model. Numeric tensors view their
/// data as raw bytes without copying the array they were built from; string tensors hold strings.
/// A tensor is immutable once built: its shape always matches its data length.
/// </summary>
/// <remarks>
/// Tensors in an <see cref="InferenceResponse"/> view pooled buffers that go back to the pool when the
/// response is disposed; copy what you keep (<see cref="ToArray{T}"/>) before disposing it.
/// </remarks>
public readonly struct Tensor
{
    private readonly long[] _shape;
    private readonly object? _data;
    private readonly int _offset; // bytes for numeric tensors, elements for string tensors
    private readonly int _length; // bytes for numeric tensors, elements for string tensors

    private Tensor(string name, TensorElementType type, long[] shape, object? data, int offset, int length)
    {
        Name = name;
        ElementType = type;
        _shape = shape;
        _data = data;
        _offset = offset;
        _length = length;
    }

    /// <summary>The input or output name.</summary>
    public string Name { get; }

    /// <summary>The element type.</summary>
    public TensorElementType ElementType { get; }

    /// <summary>The dimensions, outermost first. Never negative.</summary>
    public ReadOnlySpan<long> Shape => _shape;

    /// <summary>The number of dimensions.</summary>
    public int Rank => _shape?.Length ?? 0;

    /// <summary>True for a default (never built) tensor.</summary>
    public bool IsDefault => Name is null;

    /// <summary>The number of elements: the product of the shape.</summary>
    public long ElementCount => ElementType == TensorElementType.String ? _length : (ElementType.SizeOf() == 0 ? 0 : _length / ElementType.SizeOf());

    /// <summary>The data size in bytes (0 for string tensors).</summary>
    public int ByteLength => ElementType == TensorElementType.String ? 0 : _length;

    /// <summary>The raw little-endian bytes of a numeric tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor holds strings.</exception>
    public ReadOnlySpan<byte> Bytes
    {
        get
        {
            if (ElementType == TensorElementType.String)
            {
                throw new InvalidOperationException($"Tensor '{Name}' holds strings (BYTES); read it with GetStrings().");
            }

            return RawBytes;
        }
    }

    internal ReadOnlySpan<byte> RawBytes => _data is null
        ? default
        : MemoryMarshal.CreateReadOnlySpan(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference((Array)_data), _offset), _length);

    internal object? DataObject => _data;

    /// <summary>Reads the elements as <typeparamref name="T"/>, which must be the CLR type of <see cref="ElementType"/>.</summary>
    /// <exception cref="InvalidOperationException"><typeparamref name="T"/> does not match the element type.</exception>
    public ReadOnlySpan<T> GetSpan<T>()
        where T : unmanaged
    {
        var wanted = TensorElementTypes.Of<T>();
        if (wanted != ElementType)
        {
            throw new InvalidOperationException($"Tensor '{Name}' holds {ElementType} elements; it cannot be read as {typeof(T).Name} ({wanted}).");
        }

        return MemoryMarshal.Cast<byte, T>(RawBytes);
    }

    /// <summary>Reads the elements of a string (BYTES) tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor is numeric.</exception>
    public ReadOnlySpan<string> GetStrings()
    {
        if (ElementType != TensorElementType.String)
        {
            throw new InvalidOperationException($"Tensor '{Name}' holds {ElementType} elements, not strings.");
        }

        return _data is null ? default : new ReadOnlySpan<string>((string[])_data, _offset, _length);
    }

    /// <summary>Copies the elements into a new array.</summary>
    public T[] ToArray<T>()
    {
        if (typeof(T) == typeof(string))
        {
            return (T[])(object)GetStrings().ToArray();
        }

        var wanted = TensorElementTypes.Of<T>();
        if (wanted != ElementType)
        {
            throw new InvalidOperationException($"Tensor '{Name}' holds {ElementType} elements; it cannot be read as {typeof(T).Name} ({wanted}).");
        }

        var result = new T[ElementCount];
        if (result.Length > 0)
        {
            RawBytes.CopyTo(MemoryMarshal.CreateSpan(ref Unsafe.As<T, byte>(ref MemoryMarshal.GetArrayDataReference(result)), _length));
        }

        return result;
    }

    /// <summary>Builds a tensor over <paramref name="data"/> without copying it when it is backed by an array.</summary>
    /// <param name="name">The input or output name.</param>
    /// <param name="data">The elements, row-major.</param>
    /// <param name="shape">The dimensions; their product must equal the number of elements.</param>
    /// <exception cref="ArgumentException">
    /// The shape and the data length disagree, a dimension is negative, or the data is larger than a tensor holds (2 GiB).
    /// </exception>
    public static Tensor Create<T>(string name, ReadOnlyMemory<T> data, params ReadOnlySpan<long> shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var type = TensorElementTypes.Of<T>();
        var shapeCopy = CheckShape(name, type, shape, data.Length);
        if (data.IsEmpty)
        {
            return new Tensor(name, type, shapeCopy, null, 0, 0);
        }

        int size = type.SizeOf();
        long byteLength = (long)data.Length * size;
        if (byteLength > int.MaxValue)
        {
            throw new ArgumentException($"Tensor '{name}': {data.Length} {type} elements take {byteLength} bytes; a tensor holds at most {int.MaxValue} bytes.", nameof(data));
        }

        if (!MemoryMarshal.TryGetArray(data, out var segment) || segment.Array is null)
        {
            // Memory from a custom MemoryManager cannot be viewed as bytes safely for the tensor's lifetime; copy it.
            var copy = data.ToArray();
            segment = new ArraySegment<T>(copy);
        }

        if (type == TensorElementType.String)
        {
            return new Tensor(name, type, shapeCopy, segment.Array, segment.Offset, segment.Count);
        }

        if ((long)segment.Offset * size > int.MaxValue - byteLength)
        {
            // The slice starts further than a tensor can address into its array (an array over 2 GiB): view a copy of it.
            segment = new ArraySegment<T>(data.ToArray());
        }

        return new Tensor(name, type, shapeCopy, segment.Array, segment.Offset * size, (int)byteLength);
    }

    /// <summary>Builds a tensor over an array without copying it.</summary>
    /// <inheritdoc cref="Create{T}(string, ReadOnlyMemory{T}, ReadOnlySpan{long})"/>
    public static Tensor Create<T>(string name, T[] data, params ReadOnlySpan<long> shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        return Create(name, new ReadOnlyMemory<T>(data), shape);
    }

    /// <summary>Builds a one-dimensional tensor over an array without copying it.</summary>
    public static Tensor Create<T>(string name, T[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        return Create(name, new ReadOnlyMemory<T>(data), data.LongLength);
    }

    /// <summary>Builds a numeric tensor over raw little-endian bytes (for example, protocol binary data) without copying them.</summary>
    /// <exception cref="ArgumentException">
    /// The byte length is not the shape's element count times the element size, or a <see cref="TensorElementType.Bool"/>
    /// element is a byte other than 0 or 1.
    /// </exception>
    public static Tensor FromBytes(string name, TensorElementType elementType, ReadOnlyMemory<byte> bytes, params ReadOnlySpan<long> shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        int size = elementType.SizeOf();
        if (size == 0)
        {
            throw new ArgumentException($"Tensor '{name}': FromBytes needs a numeric element type, not {elementType}.", nameof(elementType));
        }

        if (bytes.Length % size != 0)
        {
            throw new ArgumentException($"Tensor '{name}': {bytes.Length} bytes is not a whole number of {elementType} elements ({size} bytes each).", nameof(bytes));
        }

        var shapeCopy = CheckShape(name, elementType, shape, bytes.Length / size);
        if (elementType == TensorElementType.Bool && bytes.Span.IndexOfAnyExcept((byte)0, (byte)1) is int bad and >= 0)
        {
            // ONNX Runtime's operators read such a byte as neither value (Not of 2 gives 3, which reads as true).
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"Tensor '{name}': Bool element {bad} is the byte {bytes.Span[bad]}; a Bool element is one byte, 0 (false) or 1 (true)."), nameof(bytes));
        }

        if (bytes.IsEmpty)
        {
            return new Tensor(name, elementType, shapeCopy, null, 0, 0);
        }

        if (!MemoryMarshal.TryGetArray(bytes, out var segment) || segment.Array is null)
        {
            segment = new ArraySegment<byte>(bytes.ToArray());
        }

        return new Tensor(name, elementType, shapeCopy, segment.Array, segment.Offset, segment.Count);
    }

    /// <summary>Returns the same data under another name.</summary>
    public Tensor WithName(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return new Tensor(name, ElementType, _shape, _data, _offset, _length);
    }

    /// <summary>Wraps a pooled or owned buffer; the shape array is taken as is (not copied).</summary>
    internal static Tensor Wrap(string name, TensorElementType type, long[] shape, byte[]? buffer, int byteLength)
        => new(name, type, shape, buffer, 0, byteLength);

    /// <summary>Wraps a string array; the shape array is taken as is (not copied).</summary>
    internal static Tensor WrapStrings(string name, long[] shape, string[]? strings, int count)
        => new(name, TensorElementType.String, shape, strings, 0, count);

    /// <summary>
    /// The product of the dimensions: 0 when any dimension is 0 (however large the others), or -1 when a dimension is
    /// negative or the product overflows a <see cref="long"/>.
    /// </summary>
    public static long ElementCountOf(ReadOnlySpan<long> shape)
    {
        bool overflow = false;
        long count = 1;
        foreach (var d in shape)
        {
            if (d < 0)
            {
                return -1;
            }

            if (d == 0)
            {
                count = 0;
            }
            else if (!overflow && count != 0)
            {
                // Both positive: the product fits when the high half is zero and the low half's sign bit is clear. One
                // multiply instead of a 64-bit division, which costs tens of cycles on every shape checked or split.
                long high = Math.BigMul(count, d, out long low);
                overflow = high != 0 || low < 0;
                count = overflow ? count : low;
            }
        }

        return count == 0 ? 0 : overflow ? -1 : count;
    }

    /// <summary>Formats a shape as [a,b,c]; -1 prints as ?.</summary>
    public static string FormatShape(ReadOnlySpan<long> shape)
    {
        var sb = new StringBuilder("[");
        for (int i = 0; i < shape.Length; i++)
        {
            if (i > 0)
            {
                sb.Append(',');
            }

            if (shape[i] < 0)
            {
                sb.Append('?');
            }
            else
            {
                sb.Append(shape[i]);
            }
        }

        return sb.Append(']').ToString();
    }

    /// <inheritdoc/>
    public override string ToString() => IsDefault ? "(default tensor)" : $"{Name}: {ElementType}{FormatShape(Shape)}";

    [SuppressMessage("Design", "CA1065", Justification = "Throws only from factories.")]
    private static long[] CheckShape(string name, TensorElementType type, ReadOnlySpan<long> shape, long dataLength)
    {
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException($"Tensor '{name}': dimension {i} of shape {FormatShape(shape)} is negative; every dimension must be 0 or more.", nameof(shape));
            }
        }

        long expected = ElementCountOf(shape);
        if (expected < 0)
        {
            throw new ArgumentException($"Tensor '{name}': shape {FormatShape(shape)} holds more {type} elements than a tensor can (the product of its dimensions overflows); the data has {dataLength}.", nameof(shape));
        }

        if (expected != dataLength)
        {
            throw new ArgumentException($"Tensor '{name}': shape {FormatShape(shape)} holds {expected} {type} elements but the data has {dataLength}.", nameof(shape));
        }

        return shape.ToArray();
    }
}
