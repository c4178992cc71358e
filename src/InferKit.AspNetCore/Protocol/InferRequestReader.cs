using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using InferKit.Scheduling;
using InferKit.Tensors;

namespace InferKit.AspNetCore.Protocol;

/// <summary>
/// Reads an Open Inference Protocol inference request: the JSON object with <see cref="Utf8JsonReader"/>, straight
/// into pooled tensor buffers, and the binary tensor data that may follow it (Triton's binary tensor data extension).
/// </summary>
internal static class InferRequestReader
{
    private static readonly JsonReaderOptions ReaderOptions = new() { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 64 };
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The largest draft array a thread keeps between requests (a request with more inputs allocates its own).</summary>
    private const int MaxCachedDrafts = 16;

    /// <summary>Parses a request body.</summary>
    /// <param name="body">The whole body, backed by an array; binary inputs may view it without copying, so it must outlive the payload's use.</param>
    /// <param name="headerLength">The length of the JSON part: the <c>Inference-Header-Content-Length</c> header, or the body length.</param>
    /// <exception cref="ProtocolException">The body is not a valid inference request; the message says what is wrong.</exception>
    public static InferRequestPayload Read(ReadOnlyMemory<byte> body, int headerLength)
    {
        if (headerLength < 0 || headerLength > body.Length)
        {
            throw new ProtocolException(
                $"The Inference-Header-Content-Length header says the JSON part has {headerLength} bytes, but the body has only {body.Length}.");
        }

        var payload = new InferRequestPayload();
        try
        {
            ReadCore(body, headerLength, payload);
            return payload;
        }
        catch (JsonException ex)
        {
            payload.Dispose();
            throw new ProtocolException($"The request JSON is malformed: {ex.Message}", ex);
        }
        catch
        {
            payload.Dispose();
            throw;
        }
    }

    private static void ReadCore(ReadOnlyMemory<byte> body, int headerLength, InferRequestPayload payload)
    {
        var json = body.Span[..headerLength];
        if (json.IsEmpty)
        {
            throw new ProtocolException("The request body is empty; expected a JSON inference request with 'inputs'.");
        }

        var reader = new Utf8JsonReader(json, ReaderOptions);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            throw new ProtocolException($"The request body must be a JSON object (an inference request), not a {reader.TokenType}.");
        }

        // The drafts live only while this method runs: each thread keeps its array for the next request.
        var drafts = ThreadScratch<InputDraft>.Take(0);
        try
        {
            ReadRequestObject(body, headerLength, payload, json, ref reader, ref drafts);
        }
        finally
        {
            ThreadScratch<InputDraft>.Return(drafts, drafts.Length, MaxCachedDrafts);
        }
    }

    /// <summary>Reads the request object's members after its opening brace, then each input's data.</summary>
    private static void ReadRequestObject(ReadOnlyMemory<byte> body, int headerLength, InferRequestPayload payload, ReadOnlySpan<byte> json, ref Utf8JsonReader reader, ref InputDraft[] drafts)
    {
        int draftCount = 0;
        bool sawInputs = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (NameIs(ref reader, ProtocolNames.Inputs))
            {
                reader.Read();
                sawInputs = true;
                ReadInputs(ref reader, payload, headerLength, ref drafts, ref draftCount);
            }
            else if (NameIs(ref reader, ProtocolNames.Outputs))
            {
                reader.Read();
                payload.Outputs = ReadOutputs(ref reader);
            }
            else if (NameIs(ref reader, ProtocolNames.Id))
            {
                reader.Read();
                payload.Id = reader.TokenType switch
                {
                    JsonTokenType.String => Text(ref reader, "The request 'id'"),
                    JsonTokenType.Null => null,
                    _ => throw new ProtocolException($"The request 'id' must be a string, not a {reader.TokenType}."),
                };
            }
            else if (NameIs(ref reader, ProtocolNames.Parameters))
            {
                reader.Read();
                ReadRequestParameters(ref reader, payload);
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        // The object must be the whole JSON part: "{...}}" or "{...}{...}" is malformed, not a request and some noise.
        // (With the reader's default options, Read throws at anything but whitespace after the root value.)
        if (reader.Read())
        {
            throw new ProtocolException($"The request JSON continues after the request object's closing brace (a {reader.TokenType}); expected one JSON object.");
        }

        if (!sawInputs || draftCount == 0)
        {
            throw new ProtocolException("The request has no 'inputs'; expected an array of tensors, each with 'name', 'shape', 'datatype' and 'data'.");
        }

        var inputs = new Tensor[draftCount];
        int binaryStart = headerLength;
        int binaryLength = body.Length - headerLength;
        int cursor = 0;
        for (int i = 0; i < draftCount; i++)
        {
            ref var d = ref drafts[i];
            for (int j = 0; j < i; j++)
            {
                if (string.Equals(drafts[j].Name, d.Name, StringComparison.Ordinal))
                {
                    throw new ProtocolException($"Input '{d.Name}' appears more than once in the request.");
                }
            }

            if (!d.Tensor.IsDefault)
            {
                inputs[i] = d.Tensor;
            }
            else if (d.DataStart >= 0)
            {
                var sub = new Utf8JsonReader(json[d.DataStart..d.DataEnd], ReaderOptions);
                sub.Read();
                inputs[i] = ReadData(ref sub, payload, d.Name!, d.Type, d.Shape!, headerLength);
            }
            else
            {
                long size = d.BinarySize!.Value;
                if (size > binaryLength - cursor)
                {
                    throw new ProtocolException(binaryLength == 0
                        ? $"Input '{d.Name}' has binary_data_size {size}, but no binary data follows the JSON: send the JSON length in the Inference-Header-Content-Length header and the tensor bytes after the JSON."
                        : $"Input '{d.Name}' has binary_data_size {size}, but only {binaryLength - cursor} bytes of binary data remain after the JSON and the inputs before it.");
                }

                inputs[i] = ReadBinary(body.Slice(binaryStart + cursor, (int)size), payload, d.Name!, d.Type, d.Shape!);
                cursor += (int)size;
            }
        }

        if (cursor != binaryLength)
        {
            throw new ProtocolException(
                $"The body has {binaryLength} bytes after the {headerLength}-byte JSON part, but the inputs' binary_data_size parameters add up to {cursor}.");
        }

        payload.Inputs = inputs;
    }

    private static void ReadInputs(ref Utf8JsonReader reader, InferRequestPayload payload, int headerLength, ref InputDraft[] drafts, ref int count)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new ProtocolException($"'inputs' must be an array of tensors, not a {reader.TokenType}.");
        }

        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new ProtocolException($"inputs[{count}] must be a JSON object with 'name', 'shape', 'datatype' and 'data', not a {reader.TokenType}.");
            }

            if (count == drafts.Length)
            {
                Array.Resize(ref drafts, count * 2);
            }

            drafts[count] = ReadInput(ref reader, payload, count, headerLength);
            count++;
        }
    }

    private static InputDraft ReadInput(ref Utf8JsonReader reader, InferRequestPayload payload, int index, int headerLength)
    {
        var d = new InputDraft { DataStart = -1, DataEnd = -1 };
        bool sawData = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (NameIs(ref reader, ProtocolNames.Name))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.String)
                {
                    throw new ProtocolException($"inputs[{index}].name must be a string, not a {reader.TokenType}.");
                }

                try
                {
                    d.Name = reader.GetString();
                }
                catch (InvalidOperationException ex)
                {
                    throw InvalidText($"inputs[{index}].name", ex);
                }
                if (string.IsNullOrEmpty(d.Name))
                {
                    throw new ProtocolException($"inputs[{index}].name is empty.");
                }
            }
            else if (NameIs(ref reader, ProtocolNames.Datatype))
            {
                reader.Read();
                d.Type = ReadDatatype(ref reader, Label(d.Name, index));
            }
            else if (NameIs(ref reader, ProtocolNames.Shape))
            {
                reader.Read();
                d.Shape = ReadShape(ref reader, Label(d.Name, index));
            }
            else if (NameIs(ref reader, ProtocolNames.Parameters))
            {
                reader.Read();
                d.BinarySize = ReadInputParameters(ref reader, Label(d.Name, index));
            }
            else if (NameIs(ref reader, ProtocolNames.Data))
            {
                reader.Read();
                sawData = true;
                if (d.Name is not null && d.Type != TensorElementType.Undefined && d.Shape is not null)
                {
                    d.Tensor = ReadData(ref reader, payload, d.Name, d.Type, d.Shape, headerLength);
                }
                else
                {
                    // 'data' came before 'name', 'datatype' or 'shape': remember where it is and read it once the rest is known.
                    d.DataStart = checked((int)reader.TokenStartIndex);
                    reader.Skip();
                    d.DataEnd = checked((int)reader.BytesConsumed);
                }
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        if (d.Name is null)
        {
            throw new ProtocolException($"inputs[{index}] has no 'name'.");
        }

        if (d.Type == TensorElementType.Undefined)
        {
            throw new ProtocolException($"Input '{d.Name}' has no 'datatype'; expected one of {ProtocolNames.KnownDatatypes}.");
        }

        if (d.Shape is null)
        {
            throw new ProtocolException($"Input '{d.Name}' has no 'shape'; expected an array of non-negative integers.");
        }

        if (sawData && d.BinarySize.HasValue)
        {
            throw new ProtocolException($"Input '{d.Name}' has both 'data' and a binary_data_size parameter; send its data one way only.");
        }

        if (!sawData && !d.BinarySize.HasValue)
        {
            throw new ProtocolException($"Input '{d.Name}' has no 'data' and no binary_data_size parameter; one of them must carry its values.");
        }

        return d;
    }

    /// <summary>
    /// Whether the current property name is <paramref name="name"/>. <see cref="Utf8JsonReader.ValueTextEquals(string)"/>
    /// unescapes an escaped name and throws <see cref="InvalidOperationException"/> at an escaped unpaired surrogate
    /// (<c>"\ud800"</c>): such a name is the caller's mistake, not a server fault.
    /// </summary>
    private static bool NameIs(ref Utf8JsonReader reader, string name)
    {
        if (!reader.ValueIsEscaped)
        {
            return reader.ValueTextEquals(name);
        }

        try
        {
            return reader.ValueTextEquals(name);
        }
        catch (InvalidOperationException ex)
        {
            throw InvalidText(string.Create(CultureInfo.InvariantCulture, $"The property name at byte {reader.TokenStartIndex} of the request JSON"), ex);
        }
    }

    private static string Label(string? name, int index) => name is null ? $"inputs[{index}]" : $"Input '{name}'";

    private static TensorElementType ReadDatatype(ref Utf8JsonReader reader, string label)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw new ProtocolException($"{label}: 'datatype' must be a string such as \"FP32\", not a {reader.TokenType}.");
        }

        Span<char> chars = stackalloc char[16];
        if (reader.ValueSpan.Length <= chars.Length && !reader.ValueIsEscaped)
        {
            int n = Encoding.UTF8.GetChars(reader.ValueSpan, chars);
            if (TensorElementTypes.TryParseProtocolName(chars[..n], out var type))
            {
                return type;
            }
        }

        // An escaped name ("FP\u0033\u0032") is the same string once unescaped.
        string text = Text(ref reader, $"{label}: 'datatype'");
        if (reader.ValueIsEscaped && TensorElementTypes.TryParseProtocolName(text, out var unescaped))
        {
            return unescaped;
        }

        throw new ProtocolException($"{label}: datatype '{text}' is not an Open Inference Protocol datatype; expected one of {ProtocolNames.KnownDatatypes}.");
    }

    private static long[] ReadShape(ref Utf8JsonReader reader, string label)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new ProtocolException($"{label}: 'shape' must be an array of non-negative integers, not a {reader.TokenType}.");
        }

        Span<long> dims = stackalloc long[16];
        long[]? overflow = null;
        int n = 0;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long dim) || dim < 0)
            {
                throw new ProtocolException($"{label}: 'shape' must be an array of non-negative integers; dimension {n} is {RawText(ref reader)}.");
            }

            if (overflow is null && n == dims.Length)
            {
                overflow = new long[dims.Length * 2];
                dims.CopyTo(overflow);
            }
            else if (overflow is not null && n == overflow.Length)
            {
                Array.Resize(ref overflow, overflow.Length * 2);
            }

            if (overflow is null)
            {
                dims[n] = dim;
            }
            else
            {
                overflow[n] = dim;
            }

            n++;
        }

        return overflow is null ? dims[..n].ToArray() : overflow.AsSpan(0, n).ToArray();
    }

    private static long? ReadInputParameters(ref Utf8JsonReader reader, string label)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new ProtocolException($"{label}: 'parameters' must be a JSON object, not a {reader.TokenType}.");
        }

        long? binarySize = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (NameIs(ref reader, ProtocolNames.BinaryDataSize))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long size) || size < 0)
                {
                    throw new ProtocolException($"{label}: the binary_data_size parameter must be a non-negative integer (bytes), not {RawText(ref reader)}.");
                }

                binarySize = size;
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        return binarySize;
    }

    private static RequestedOutput[] ReadOutputs(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new ProtocolException($"'outputs' must be an array of {{\"name\": ...}} objects, not a {reader.TokenType}.");
        }

        var outputs = new RequestedOutput[2];
        int count = 0;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                throw new ProtocolException($"outputs[{count}] must be a JSON object with a 'name', not a {reader.TokenType}.");
            }

            string? name = null;
            bool? binary = null;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (NameIs(ref reader, ProtocolNames.Name))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                    {
                        throw new ProtocolException($"outputs[{count}].name must be a string, not a {reader.TokenType}.");
                    }

                    try
                    {
                        name = reader.GetString();
                    }
                    catch (InvalidOperationException ex)
                    {
                        throw InvalidText($"outputs[{count}].name", ex);
                    }
                }
                else if (NameIs(ref reader, ProtocolNames.Parameters))
                {
                    reader.Read();
                    binary = ReadOutputParameters(ref reader, count);
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }

            if (string.IsNullOrEmpty(name))
            {
                throw new ProtocolException($"outputs[{count}] has no 'name'.");
            }

            for (int j = 0; j < count; j++)
            {
                if (string.Equals(outputs[j].Name, name, StringComparison.Ordinal))
                {
                    throw new ProtocolException($"Output '{name}' is requested more than once.");
                }
            }

            if (count == outputs.Length)
            {
                Array.Resize(ref outputs, count * 2);
            }

            outputs[count++] = new RequestedOutput(name, binary);
        }

        return count == outputs.Length ? outputs : outputs.AsSpan(0, count).ToArray();
    }

    private static bool? ReadOutputParameters(ref Utf8JsonReader reader, int index)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new ProtocolException($"outputs[{index}].parameters must be a JSON object, not a {reader.TokenType}.");
        }

        bool? binary = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (NameIs(ref reader, ProtocolNames.BinaryData))
            {
                reader.Read();
                binary = reader.TokenType switch
                {
                    JsonTokenType.True => true,
                    JsonTokenType.False => false,
                    _ => throw new ProtocolException($"outputs[{index}]: the binary_data parameter must be true or false, not {RawText(ref reader)}."),
                };
            }
            else if (NameIs(ref reader, ProtocolNames.Classification))
            {
                throw new ProtocolException($"outputs[{index}]: the classification extension is not supported; request the raw output instead.");
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        return binary;
    }

    private static void ReadRequestParameters(ref Utf8JsonReader reader, InferRequestPayload payload)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new ProtocolException($"The request 'parameters' must be a JSON object, not a {reader.TokenType}.");
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (NameIs(ref reader, ProtocolNames.BinaryDataOutput))
            {
                reader.Read();
                payload.BinaryDataOutput = reader.TokenType switch
                {
                    JsonTokenType.True => true,
                    JsonTokenType.False => false,
                    _ => throw new ProtocolException($"The binary_data_output parameter must be true or false, not {RawText(ref reader)}."),
                };
            }
            else if (NameIs(ref reader, ProtocolNames.Timeout))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long us) || us < 0)
                {
                    throw new ProtocolException($"The timeout parameter must be a non-negative integer number of microseconds, not {RawText(ref reader)}.");
                }

                payload.TimeoutMicroseconds = us;
            }
            else if (NameIs(ref reader, ProtocolNames.Priority))
            {
                reader.Read();
                InferencePriority? priority = null;
                bool ok = reader.TokenType switch
                {
                    JsonTokenType.Number => reader.TryGetInt64(out long number) && PriorityParser.TryFromNumber(number, out priority),
                    JsonTokenType.String => PriorityParser.TryParse(Text(ref reader, "The priority parameter"), out priority),
                    _ => false,
                };
                if (!ok)
                {
                    throw new ProtocolException($"The priority parameter must be one of {PriorityParser.Expected}, not {RawText(ref reader)}.");
                }

                payload.Priority = priority;
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
    }

    /// <summary>
    /// The bytes <paramref name="count"/> elements of <paramref name="type"/> take; a request error when one array cannot
    /// hold them (a JSON part over about 512 MB can carry that many 8-byte values when the size limit allows it).
    /// </summary>
    internal static int ByteLength(string name, TensorElementType type, long[] shape, long count)
    {
        long bytes = count * type.SizeOf(); // count is below int.MaxValue here: no overflow in a long
        if (bytes > Array.MaxLength)
        {
            throw new ProtocolException(string.Create(CultureInfo.InvariantCulture,
                $"Input '{name}': shape {Tensor.FormatShape(shape)} of {type.ToProtocolName()} needs {bytes} bytes, more than one tensor can hold ({Array.MaxLength} bytes)."));
        }

        return (int)bytes;
    }

    private static Tensor ReadData(ref Utf8JsonReader reader, InferRequestPayload payload, string name, TensorElementType type, long[] shape, int headerLength)
    {
        long count = Tensor.ElementCountOf(shape);
        if (count < 0)
        {
            throw new ProtocolException($"Input '{name}': shape {Tensor.FormatShape(shape)} has too many elements.");
        }

        if (type == TensorElementType.String)
        {
            // Each JSON string takes at least two bytes plus a separator: a bound that stops a huge shape from renting a huge buffer.
            if (count > (headerLength + 1) / 3)
            {
                throw new ProtocolException($"Input '{name}': shape {Tensor.FormatShape(shape)} holds {count} BYTES elements, more than a {headerLength}-byte JSON request can carry.");
            }

            int n = (int)count;
            var strings = payload.RentStrings(n);
            ReadStrings(ref reader, strings.AsSpan(0, n), name, shape);
            return Tensor.Create(name, new ReadOnlyMemory<string>(strings, 0, n), shape);
        }

        // Each JSON value takes at least one byte plus a separator.
        if (count > (headerLength + 1) / 2)
        {
            throw new ProtocolException($"Input '{name}': shape {Tensor.FormatShape(shape)} holds {count} elements, more than a {headerLength}-byte JSON request can carry.");
        }

        int byteLength = ByteLength(name, type, shape, count);
        var buffer = payload.RentBytes(byteLength);
        var bytes = buffer.AsSpan(0, byteLength);
        switch (type)
        {
            case TensorElementType.Float32: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, float>(bytes), name, type, shape); break;
            case TensorElementType.Float16: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, Half>(bytes), name, type, shape); break;
            case TensorElementType.BFloat16: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, BFloat16>(bytes), name, type, shape); break;
            case TensorElementType.Float64: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, double>(bytes), name, type, shape); break;
            case TensorElementType.Int8: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, sbyte>(bytes), name, type, shape); break;
            case TensorElementType.Int16: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, short>(bytes), name, type, shape); break;
            case TensorElementType.Int32: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, int>(bytes), name, type, shape); break;
            case TensorElementType.Int64: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, long>(bytes), name, type, shape); break;
            case TensorElementType.UInt8: ReadNumbers(ref reader, bytes, name, type, shape); break;
            case TensorElementType.UInt16: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, ushort>(bytes), name, type, shape); break;
            case TensorElementType.UInt32: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, uint>(bytes), name, type, shape); break;
            case TensorElementType.UInt64: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, ulong>(bytes), name, type, shape); break;
            case TensorElementType.Bool: ReadNumbers(ref reader, MemoryMarshal.Cast<byte, bool>(bytes), name, type, shape); break;
            default: throw new ProtocolException($"Input '{name}': datatype {type.ToProtocolName()} is not supported.");
        }

        return Tensor.FromBytes(name, type, new ReadOnlyMemory<byte>(buffer, 0, byteLength), shape);
    }

    /// <summary>Reads a flat or nested array (or a lone value) of numbers into <paramref name="destination"/>, which must be filled exactly.</summary>
    private static void ReadNumbers<T>(ref Utf8JsonReader reader, Span<T> destination, string name, TensorElementType type, long[] shape)
        where T : unmanaged
    {
        long n = 0;
        int depth = 0;
        var nesting = new Nesting(stackalloc int[Nesting.MaxDepth], stackalloc int[Nesting.MaxDepth]);
        while (true)
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartArray:
                    nesting.Open(depth++, name, shape);
                    break;
                case JsonTokenType.EndArray:
                    nesting.Close(--depth, name, shape);
                    break;
                case JsonTokenType.Number:
                case JsonTokenType.String:
                case JsonTokenType.True:
                case JsonTokenType.False:
                    nesting.Value(depth, name, shape);
                    if (n < destination.Length)
                    {
                        destination[(int)n] = ParseElement<T>(ref reader, name, type, n);
                    }

                    n++;
                    break;
                default:
                    throw new ProtocolException($"Input '{name}': element {n} of 'data' is a {reader.TokenType}; expected {type.ToProtocolName()} values.");
            }

            if (depth == 0 || !reader.Read())
            {
                break;
            }
        }

        if (n != destination.Length)
        {
            throw CountMismatch(name, type, shape, destination.Length, n);
        }
    }

    private static void ReadStrings(ref Utf8JsonReader reader, Span<string> destination, string name, long[] shape)
    {
        long n = 0;
        int depth = 0;
        var nesting = new Nesting(stackalloc int[Nesting.MaxDepth], stackalloc int[Nesting.MaxDepth]);
        while (true)
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartArray:
                    nesting.Open(depth++, name, shape);
                    break;
                case JsonTokenType.EndArray:
                    nesting.Close(--depth, name, shape);
                    break;
                case JsonTokenType.String:
                    nesting.Value(depth, name, shape);
                    if (n < destination.Length)
                    {
                        try
                        {
                            destination[(int)n] = reader.GetString()!;
                        }
                        catch (InvalidOperationException ex)
                        {
                            throw InvalidText($"Input '{name}': element {n} of 'data'", ex);
                        }
                    }

                    n++;
                    break;
                default:
                    throw new ProtocolException($"Input '{name}': element {n} of 'data' is a {reader.TokenType}; BYTES data must be JSON strings.");
            }

            if (depth == 0 || !reader.Read())
            {
                break;
            }
        }

        if (n != destination.Length)
        {
            throw CountMismatch(name, TensorElementType.String, shape, destination.Length, n);
        }
    }

    private static ProtocolException CountMismatch(string name, TensorElementType type, long[] shape, long expected, long actual) =>
        new($"Input '{name}': shape {Tensor.FormatShape(shape)} holds {expected} {type.ToProtocolName()} elements, but 'data' has {actual}.");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryFastSingle(ref Utf8JsonReader reader, out float value)
    {
        value = 0;
        return !reader.HasValueSequence && DecimalFastPath.TryParseSingle(reader.ValueSpan, out value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryFastDouble(ref Utf8JsonReader reader, out double value)
    {
        value = 0;
        return !reader.HasValueSequence && DecimalFastPath.TryParseDouble(reader.ValueSpan, out value);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T ParseElement<T>(ref Utf8JsonReader reader, string name, TensorElementType type, long index)
        where T : unmanaged
    {
        // A number literal must fit the type: one that parses to an infinity (3.5e38 for FP32) is refused, since
        // non-finite values travel as strings.
        if (typeof(T) == typeof(float))
        {
            float v = reader.TokenType == JsonTokenType.Number && (TryFastSingle(ref reader, out float f) || reader.TryGetSingle(out f))
                ? (float.IsFinite(f) ? f : throw OutOfRange(ref reader, name, type, index))
                : (float)NonFinite(ref reader, name, type, index);
            return Unsafe.As<float, T>(ref v);
        }

        if (typeof(T) == typeof(double))
        {
            double v = reader.TokenType == JsonTokenType.Number && (TryFastDouble(ref reader, out double d) || reader.TryGetDouble(out d))
                ? (double.IsFinite(d) ? d : throw OutOfRange(ref reader, name, type, index))
                : NonFinite(ref reader, name, type, index);
            return Unsafe.As<double, T>(ref v);
        }

        if (typeof(T) == typeof(Half))
        {
            Half v = reader.TokenType == JsonTokenType.Number && reader.TryGetDouble(out double d)
                ? (Half.IsFinite((Half)d) ? (Half)d : throw OutOfRange(ref reader, name, type, index))
                : (Half)NonFinite(ref reader, name, type, index);
            return Unsafe.As<Half, T>(ref v);
        }

        if (typeof(T) == typeof(BFloat16))
        {
            BFloat16 v = reader.TokenType == JsonTokenType.Number && reader.TryGetDouble(out double d)
                ? ((BFloat16)RoundToOddSingle(d) is var b && float.IsFinite((float)b) ? b : throw OutOfRange(ref reader, name, type, index))
                : (BFloat16)(float)NonFinite(ref reader, name, type, index);
            return Unsafe.As<BFloat16, T>(ref v);
        }

        if (typeof(T) == typeof(bool))
        {
            bool v = reader.TokenType switch
            {
                JsonTokenType.True => true,
                JsonTokenType.False => false,
                _ => Integer(ref reader, name, type, index, 0, 1) != 0,
            };
            return Unsafe.As<bool, T>(ref v);
        }

        if (typeof(T) == typeof(ulong))
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetUInt64(out ulong u))
            {
                throw BadElement(ref reader, name, type, index);
            }

            return Unsafe.As<ulong, T>(ref u);
        }

        if (typeof(T) == typeof(long))
        {
            long v = Integer(ref reader, name, type, index, long.MinValue, long.MaxValue);
            return Unsafe.As<long, T>(ref v);
        }

        if (typeof(T) == typeof(int))
        {
            int v = (int)Integer(ref reader, name, type, index, int.MinValue, int.MaxValue);
            return Unsafe.As<int, T>(ref v);
        }

        if (typeof(T) == typeof(short))
        {
            short v = (short)Integer(ref reader, name, type, index, short.MinValue, short.MaxValue);
            return Unsafe.As<short, T>(ref v);
        }

        if (typeof(T) == typeof(sbyte))
        {
            sbyte v = (sbyte)Integer(ref reader, name, type, index, sbyte.MinValue, sbyte.MaxValue);
            return Unsafe.As<sbyte, T>(ref v);
        }

        if (typeof(T) == typeof(byte))
        {
            byte v = (byte)Integer(ref reader, name, type, index, byte.MinValue, byte.MaxValue);
            return Unsafe.As<byte, T>(ref v);
        }

        if (typeof(T) == typeof(ushort))
        {
            ushort v = (ushort)Integer(ref reader, name, type, index, ushort.MinValue, ushort.MaxValue);
            return Unsafe.As<ushort, T>(ref v);
        }

        if (typeof(T) == typeof(uint))
        {
            uint v = (uint)Integer(ref reader, name, type, index, uint.MinValue, uint.MaxValue);
            return Unsafe.As<uint, T>(ref v);
        }

        throw new ProtocolException($"Input '{name}': datatype {type.ToProtocolName()} is not supported.");
    }

    /// <summary>
    /// <paramref name="value"/> as a float rounded to odd: of the two floats around it, the one whose last significand
    /// bit is 1 (the value itself when it is exact). Rounding that to BF16's 8-bit significand gives the BF16 nearest to
    /// the double, which rounding to the nearest float first does not: a double just past a BF16 tie would become the
    /// tie, which then goes to even, the wrong way.
    /// </summary>
    private static float RoundToOddSingle(double value)
    {
        float f = (float)value;
        if ((double)f != value && (BitConverter.SingleToUInt32Bits(f) & 1) == 0)
        {
            f = (double)f < value ? MathF.BitIncrement(f) : MathF.BitDecrement(f);
        }

        return f;
    }

    private static long Integer(ref Utf8JsonReader reader, string name, TensorElementType type, long index, long min, long max)
    {
        if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out long v) && v >= min && v <= max)
        {
            return v;
        }

        throw BadElement(ref reader, name, type, index);
    }

    /// <summary>JSON has no NaN or infinity; they travel as the strings "NaN", "Infinity" and "-Infinity".</summary>
    private static double NonFinite(ref Utf8JsonReader reader, string name, TensorElementType type, long index)
    {
        if (reader.TokenType == JsonTokenType.String && TryNonFinite(ref reader, out double value))
        {
            return value;
        }

        throw BadElement(ref reader, name, type, index);
    }

    private static bool TryNonFinite(ref Utf8JsonReader reader, out double value)
    {
        try
        {
            value = reader.ValueTextEquals("NaN"u8) ? double.NaN
                : reader.ValueTextEquals("Infinity"u8) || reader.ValueTextEquals("inf"u8) ? double.PositiveInfinity
                : reader.ValueTextEquals("-Infinity"u8) || reader.ValueTextEquals("-inf"u8) ? double.NegativeInfinity
                : 0;
            return value != 0;
        }
        catch (InvalidOperationException)
        {
            // An escaped unpaired surrogate: not one of the names, and reported as such by the caller.
            value = 0;
            return false;
        }
    }

    private static ProtocolException BadElement(ref Utf8JsonReader reader, string name, TensorElementType type, long index)
    {
        string expected = type switch
        {
            TensorElementType.Bool => "true or false",
            TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Float32 or TensorElementType.Float64 =>
                "a number (or \"NaN\", \"Infinity\", \"-Infinity\")",
            _ => $"an integer in the range of {type.ToProtocolName()}",
        };
        return new ProtocolException($"Input '{name}': element {index} of 'data' is {RawText(ref reader)}; expected {expected}.");
    }

    private static ProtocolException OutOfRange(ref Utf8JsonReader reader, string name, TensorElementType type, long index) =>
        new($"Input '{name}': element {index} of 'data' is {RawText(ref reader)}, outside the range of {type.ToProtocolName()}; non-finite values travel as \"NaN\", \"Infinity\" or \"-Infinity\".");

    /// <summary>
    /// The current string token's text. <see cref="Utf8JsonReader"/> checks a string's UTF-8 and escapes only when it is
    /// read (throwing <see cref="InvalidOperationException"/>): such a string is the caller's mistake, named by <paramref name="what"/>.
    /// </summary>
    private static string Text(ref Utf8JsonReader reader, string what)
    {
        try
        {
            return reader.GetString()!;
        }
        catch (InvalidOperationException ex)
        {
            throw InvalidText(what, ex);
        }
    }

    private static ProtocolException InvalidText(string what, InvalidOperationException ex) =>
        new($"{what} is not valid text: a JSON string must be UTF-8 and must not escape an unpaired surrogate (\\uD800 to \\uDFFF).", ex);

    private static string RawText(ref Utf8JsonReader reader)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.String:
                try
                {
                    return "\"" + reader.GetString() + "\"";
                }
                catch (InvalidOperationException)
                {
                    return "a string that is not valid text";
                }

            case JsonTokenType.Number:
                return Encoding.UTF8.GetString(reader.ValueSpan);
            case JsonTokenType.True:
                return "true";
            case JsonTokenType.False:
                return "false";
            case JsonTokenType.Null:
                return "null";
            case JsonTokenType.StartArray:
                return "an array";
            case JsonTokenType.StartObject:
                return "an object";
            default:
                return reader.TokenType.ToString();
        }
    }

    private static Tensor ReadBinary(ReadOnlyMemory<byte> data, InferRequestPayload payload, string name, TensorElementType type, long[] shape)
    {
        long count = Tensor.ElementCountOf(shape);
        if (count < 0)
        {
            throw new ProtocolException($"Input '{name}': shape {Tensor.FormatShape(shape)} has too many elements.");
        }

        if (type == TensorElementType.String)
        {
            return ReadBinaryStrings(data.Span, payload, name, shape, count);
        }

        // Compared by division: count * size can overflow (a shape of 2^61 + 3 FP64 elements "needs" 24 bytes).
        int size = type.SizeOf();
        if (data.Length % size != 0 || data.Length / size != count)
        {
            throw new ProtocolException(
                $"Input '{name}': binary_data_size is {data.Length} bytes, but shape {Tensor.FormatShape(shape)} of {type.ToProtocolName()} needs {(Int128)count * size} ({count} elements of {size} bytes).");
        }

        // As JSON BOOL data is true or false, a binary BOOL element is a byte 0 or 1 (Tensor.FromBytes refuses any other).
        if (type == TensorElementType.Bool && data.Span.IndexOfAnyExcept((byte)0, (byte)1) is int bad and >= 0)
        {
            throw new ProtocolException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"Input '{name}': binary BOOL element {bad} is the byte {data.Span[bad]}; a BOOL element is one byte, 0 (false) or 1 (true)."));
        }

        // View the body without copying when the data is aligned for its element type; copy it into a pooled buffer otherwise.
        if (MemoryMarshal.TryGetArray(data, out var segment) && segment.Offset % size == 0)
        {
            return Tensor.FromBytes(name, type, data, shape);
        }

        var buffer = payload.RentBytes(data.Length);
        data.Span.CopyTo(buffer);
        return Tensor.FromBytes(name, type, new ReadOnlyMemory<byte>(buffer, 0, data.Length), shape);
    }

    private static Tensor ReadBinaryStrings(ReadOnlySpan<byte> data, InferRequestPayload payload, string name, long[] shape, long count)
    {
        // Each element takes at least its 4-byte length.
        if (count > data.Length / 4)
        {
            throw new ProtocolException(
                $"Input '{name}': shape {Tensor.FormatShape(shape)} holds {count} BYTES elements, but {data.Length} bytes of binary data can hold at most {data.Length / 4}.");
        }

        int n = (int)count;
        var strings = payload.RentStrings(n);
        int pos = 0;
        for (int i = 0; i < n; i++)
        {
            if (data.Length - pos < 4)
            {
                throw new ProtocolException($"Input '{name}': binary BYTES element {i} has no 4-byte length prefix; the data ends at byte {pos}.");
            }

            uint length = BinaryPrimitives.ReadUInt32LittleEndian(data[pos..]);
            pos += 4;
            if (length > (uint)(data.Length - pos))
            {
                throw new ProtocolException($"Input '{name}': binary BYTES element {i} says it has {length} bytes, but only {data.Length - pos} remain.");
            }

            try
            {
                strings[i] = StrictUtf8.GetString(data.Slice(pos, (int)length));
            }
            catch (DecoderFallbackException ex)
            {
                throw new ProtocolException($"Input '{name}': BYTES element {i} is not valid UTF-8; InferKit's BYTES tensors hold text.", ex);
            }

            pos += (int)length;
        }

        if (pos != data.Length)
        {
            throw new ProtocolException(
                $"Input '{name}': {n} BYTES elements take {pos} bytes, but binary_data_size is {data.Length}.");
        }

        return Tensor.Create(name, new ReadOnlyMemory<string>(strings, 0, n), shape);
    }

    /// <summary>
    /// Checks that nested <c>data</c> is a regular array: every array at one depth has the same length, and values sit at
    /// one depth only. A ragged array (<c>[[1,2,3],[4]]</c>) is not a tensor even when its element count matches the
    /// shape; read flat, it would silently put values in the wrong rows. Regular nesting that differs from the shape
    /// (<c>[[1,2],[3,4]]</c> for shape [1,4]) is read row-major, as a reshape would.
    /// </summary>
    private ref struct Nesting
    {
        /// <summary>More than the reader's maximum depth: data can never nest deeper.</summary>
        public const int MaxDepth = 66;

        private readonly Span<int> _lengths; // the length of the arrays at each depth, once one has closed; -1 before
        private readonly Span<int> _counts;  // the elements so far of the open array at each depth
        private int _valueDepth;             // the depth values sit at (arrays open around them), once one was seen; -1 before
        private int _arrayDepth;             // the deepest depth an array has opened at (arrays open around it); -1 before

        public Nesting(Span<int> lengths, Span<int> counts)
        {
            _lengths = lengths;
            _counts = counts;
            _lengths.Fill(-1);
            _valueDepth = -1;
            _arrayDepth = -1;
        }

        /// <summary>An array opens inside <paramref name="depth"/> open arrays.</summary>
        public void Open(int depth, string name, long[] shape)
        {
            if (depth + 1 >= MaxDepth)
            {
                throw new ProtocolException($"Input '{name}': 'data' nests deeper than {MaxDepth - 1} arrays.");
            }

            if (_valueDepth >= 0 && depth >= _valueDepth)
            {
                throw Mixed(depth, name, shape);
            }

            if (depth > 0)
            {
                _counts[depth - 1]++;
            }

            _counts[depth] = 0;
            _arrayDepth = Math.Max(_arrayDepth, depth);
        }

        /// <summary>The array at <paramref name="depth"/> (that many arrays around it) closes.</summary>
        public readonly void Close(int depth, string name, long[] shape)
        {
            int length = _counts[depth];
            if (_lengths[depth] < 0)
            {
                _lengths[depth] = length;
            }
            else if (_lengths[depth] != length)
            {
                throw new ProtocolException(string.Create(CultureInfo.InvariantCulture,
                    $"Input '{name}': 'data' is a ragged array: an array at depth {depth} has {length} elements, but an earlier one has {_lengths[depth]}; nested data must be regular, like shape {Tensor.FormatShape(shape)}."));
            }
        }

        /// <summary>A value inside <paramref name="depth"/> open arrays.</summary>
        public void Value(int depth, string name, long[] shape)
        {
            if (depth <= _arrayDepth || (_valueDepth >= 0 && _valueDepth != depth))
            {
                throw Mixed(Math.Min(depth, _valueDepth < 0 ? depth : _valueDepth), name, shape);
            }

            _valueDepth = depth;

            if (depth > 0)
            {
                _counts[depth - 1]++;
            }
        }

        private static ProtocolException Mixed(int depth, string name, long[] shape) =>
            new(string.Create(CultureInfo.InvariantCulture,
                $"Input '{name}': 'data' is a ragged array: it mixes values and arrays at depth {depth}; nested data must be regular, like shape {Tensor.FormatShape(shape)}."));
    }

    private struct InputDraft
    {
        public string? Name;
        public TensorElementType Type;
        public long[]? Shape;
        public long? BinarySize;
        public int DataStart;
        public int DataEnd;
        public Tensor Tensor;
    }
}

/// <summary>Parses a priority given by name (low, normal, high, critical; any case) or number (0 to 3).</summary>
/// <summary>
/// A request priority as the protocol carries it (the <c>priority</c> parameter and the InferKit-Priority header): a name
/// (low, normal, high, critical) or a number read as Triton's schedule-policy extension defines it, so that Triton's
/// clients get what they ask for: 0 is the server's default (as if no priority was given), 1 the highest level
/// (critical), 2 high, 3 normal, and 4 or more the lowest (low).
/// </summary>
internal static class PriorityParser
{
    public const string Expected = "low, normal, high, critical, or a number as Triton reads it (0 the default, 1 the highest, 2 high, 3 normal, 4 or more low)";

    /// <summary>Reads a name or a number; <paramref name="priority"/> is null for 0, the server's default.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out InferencePriority? priority)
    {
        text = text.Trim();
        priority = null;
        if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long number))
        {
            return TryFromNumber(number, out priority);
        }

        if (text.Equals("low", StringComparison.OrdinalIgnoreCase))
        {
            priority = InferencePriority.Low;
        }
        else if (text.Equals("normal", StringComparison.OrdinalIgnoreCase))
        {
            priority = InferencePriority.Normal;
        }
        else if (text.Equals("high", StringComparison.OrdinalIgnoreCase))
        {
            priority = InferencePriority.High;
        }
        else if (text.Equals("critical", StringComparison.OrdinalIgnoreCase))
        {
            priority = InferencePriority.Critical;
        }

        return priority is not null;
    }

    /// <summary>A number as Triton reads it: false when negative; null for 0, the server's default.</summary>
    public static bool TryFromNumber(long number, out InferencePriority? priority)
    {
        priority = number switch
        {
            0 => null,
            1 => InferencePriority.Critical,
            2 => InferencePriority.High,
            3 => InferencePriority.Normal,
            > 3 => InferencePriority.Low,
            _ => null,
        };
        return number >= 0;
    }
}
