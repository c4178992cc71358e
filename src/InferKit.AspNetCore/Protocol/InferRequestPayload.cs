using System.Buffers;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Protocol;

/// <summary>An output the caller asked for, and whether it wants it as binary data (null: the request's default).</summary>
internal readonly record struct RequestedOutput(string Name, bool? BinaryData);

/// <summary>
/// A parsed inference request. The input tensors view buffers rented from <see cref="ArrayPool{T}.Shared"/>
/// (or the request body itself); <see cref="Dispose"/> returns them once the model has answered.
/// </summary>
internal sealed class InferRequestPayload : IDisposable
{
    private byte[][]? _bytes;
    private int _byteCount;
    private string[][]? _strings;
    private int _stringCount;

    /// <summary>The request's <c>id</c>, echoed in the response.</summary>
    public string? Id { get; set; }

    /// <summary>The input tensors, in the order the request lists them.</summary>
    public Tensor[] Inputs { get; set; } = [];

    /// <summary>The <c>outputs</c> the request lists, or null when it lists none (all outputs are wanted).</summary>
    public RequestedOutput[]? Outputs { get; set; }

    /// <summary>The request-level <c>binary_data_output</c> parameter.</summary>
    public bool BinaryDataOutput { get; set; }

    /// <summary>The request-level <c>timeout</c> parameter, in microseconds (Triton's unit).</summary>
    public long? TimeoutMicroseconds { get; set; }

    /// <summary>The request-level <c>priority</c> parameter.</summary>
    public InferencePriority? Priority { get; set; }

    /// <summary>The names of the requested outputs, or null for all of them.</summary>
    public string[]? RequestedOutputNames()
    {
        if (Outputs is null || Outputs.Length == 0)
        {
            return null;
        }

        var names = new string[Outputs.Length];
        for (int i = 0; i < names.Length; i++)
        {
            names[i] = Outputs[i].Name;
        }

        return names;
    }

    /// <summary>Whether an output goes back as binary data, or null when it is not to be returned at all.</summary>
    public bool? OutputMode(string name)
    {
        if (Outputs is null || Outputs.Length == 0)
        {
            return BinaryDataOutput;
        }

        foreach (var o in Outputs)
        {
            if (string.Equals(o.Name, name, StringComparison.Ordinal))
            {
                return o.BinaryData ?? BinaryDataOutput;
            }
        }

        return null;
    }

    internal byte[] RentBytes(int length)
    {
        var array = ArrayPool<byte>.Shared.Rent(length);
        _bytes ??= new byte[4][];
        if (_byteCount == _bytes.Length)
        {
            Array.Resize(ref _bytes, _byteCount * 2);
        }

        _bytes[_byteCount++] = array;
        return array;
    }

    internal string[] RentStrings(int length)
    {
        var array = ArrayPool<string>.Shared.Rent(length);
        _strings ??= new string[2][];
        if (_stringCount == _strings.Length)
        {
            Array.Resize(ref _strings, _stringCount * 2);
        }

        _strings[_stringCount++] = array;
        return array;
    }

    /// <summary>Returns every rented buffer. The input tensors are invalid afterwards.</summary>
    public void Dispose()
    {
        for (int i = 0; i < _byteCount; i++)
        {
            ArrayPool<byte>.Shared.Return(_bytes![i]);
        }

        for (int i = 0; i < _stringCount; i++)
        {
            ArrayPool<string>.Shared.Return(_strings![i], clearArray: true);
        }

        _byteCount = 0;
        _stringCount = 0;
        Inputs = [];
    }
}
