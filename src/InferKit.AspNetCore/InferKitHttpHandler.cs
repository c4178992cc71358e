using System.Buffers;
using System.Globalization;
using System.Reflection;
using InferKit.AspNetCore.Protocol;
using InferKit.Models;
using InferKit.Telemetry;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore;

/// <summary>The request handlers behind <c>MapInferKit</c>: one instance per mapped group.</summary>
internal sealed partial class InferKitHttpHandler
{
    private const string JsonContentType = "application/json";
    private const string BinaryContentType = "application/octet-stream";

    private readonly IInferenceClient _client;
    private readonly IModelRegistry _registry;
    private readonly InferKitEndpointOptions _options;
    private readonly IHostApplicationLifetime? _lifetime;
    private readonly ILogger _logger;
    private readonly string _serverVersion;

    public InferKitHttpHandler(IInferenceClient client, IModelRegistry registry, InferKitEndpointOptions options, IHostApplicationLifetime? lifetime, ILogger logger)
    {
        _client = client;
        _registry = registry;
        _options = options;
        _lifetime = lifetime;
        _logger = SafeLogger.Wrap(logger); // a provider that throws must not turn a 400 or a refusal into a 500
        var assembly = typeof(IInferenceClient).Assembly;
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        _serverVersion = informational is null ? assembly.GetName().Version?.ToString(3) ?? "0.0.0" : informational.Split('+')[0];
    }

    private bool IsStopping => _lifetime?.ApplicationStopping.IsCancellationRequested == true;

    /// <summary>GET /v2: server metadata.</summary>
    public Task ServerMetadataAsync(HttpContext context)
    {
        using var buffer = new PooledBufferWriter(256);
        var writer = JsonWriterCache.Rent(buffer);
        try
        {
            MetadataWriter.WriteServerMetadata(writer, _options.ServerName, _serverVersion);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        return WriteJsonAsync(context, StatusCodes.Status200OK, buffer);
    }

    /// <summary>GET /v2/health/live: always live while the process serves HTTP.</summary>
    public static Task LiveAsync(HttpContext context) => WriteFlagAsync(context, StatusCodes.Status200OK, "live"u8, true);

    /// <summary>GET /v2/health/ready: 200 when every required model is ready and the host is not stopping; 400 otherwise (as Triton answers).</summary>
    public Task ReadyAsync(HttpContext context)
    {
        bool ready = !IsStopping && _registry.AllRequiredModelsReady;
        return WriteFlagAsync(context, ready ? StatusCodes.Status200OK : StatusCodes.Status400BadRequest, "ready"u8, ready);
    }

    /// <summary>
    /// GET /v2/models/{model}[/versions/{version}]: model metadata. Its inputs and outputs are known once the model has
    /// loaded; before that (or when loading failed) the answer is 503 with <c>Retry-After</c> and the reason, not a
    /// signature with no inputs.
    /// </summary>
    public Task ModelMetadataAsync(HttpContext context)
    {
        if (!TryGetModel(context, out var model, out var error))
        {
            return WriteErrorAsync(context, StatusCodes.Status404NotFound, error);
        }

        if (model.Signature is not { } signature)
        {
            string reason = model.Error is { } loadError
                ? $"Model '{model.Name}' is {model.State}, so its inputs and outputs are unknown: {loadError}"
                : $"Model '{model.Name}' is {model.State}: its inputs and outputs are known once it has loaded (when the host starts, or on its first inference).";
            return WriteErrorAsync(context, StatusCodes.Status503ServiceUnavailable, reason, _options.DefaultRetryAfter);
        }

        using var buffer = new PooledBufferWriter(1024);
        var writer = JsonWriterCache.Rent(buffer);
        try
        {
            MetadataWriter.WriteModelMetadata(writer, model, signature);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        return WriteJsonAsync(context, StatusCodes.Status200OK, buffer);
    }

    /// <summary>
    /// GET /v2/models/{model}[/versions/{version}]/ready: 200 when ready, 400 when not (as Triton answers), 404 when unknown.
    /// A model is not ready once the host is stopping, since inference is then refused.
    /// A cascade or adaptive model is ready only when every member is (<see cref="ModelInfo.State"/>).
    /// </summary>
    public Task ModelReadyAsync(HttpContext context)
    {
        if (!TryGetModel(context, out var model, out var error))
        {
            return WriteErrorAsync(context, StatusCodes.Status404NotFound, error);
        }

        bool ready = !IsStopping && model.IsReady;
        using var buffer = new PooledBufferWriter(256);
        var writer = JsonWriterCache.Rent(buffer);
        try
        {
            MetadataWriter.WriteModelReady(writer, model, ready);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        return WriteJsonAsync(context, ready ? StatusCodes.Status200OK : StatusCodes.Status400BadRequest, buffer);
    }

    /// <summary>POST /v2/models/{model}[/versions/{version}]/infer.</summary>
    public async Task InferAsync(HttpContext context)
    {
        string model = (string)context.Request.RouteValues["model"]!;
        string? version = context.Request.RouteValues["version"] as string;
        if (IsStopping)
        {
            // HTTP/1.x only: HTTP/2 and HTTP/3 have no Connection header (Kestrel would strip it and log a warning per
            // request) and close the connection with GOAWAY as the server stops.
            if (HttpProtocol.IsHttp11(context.Request.Protocol) || HttpProtocol.IsHttp10(context.Request.Protocol))
            {
                context.Response.Headers.Connection = "close";
            }

            await WriteErrorAsync(context, StatusCodes.Status503ServiceUnavailable,
                $"Model '{model}': the server is shutting down and takes no new requests.", _options.DefaultRetryAfter).ConfigureAwait(false);
            return;
        }

        if (UnsupportedBodyEncoding(context.Request, out bool isContentCoding) is { } unsupported)
        {
            if (isContentCoding)
            {
                context.Response.Headers.AcceptEncoding = "identity";
            }

            Log.BadRequest(_logger, model, unsupported);
            await WriteErrorAsync(context, StatusCodes.Status415UnsupportedMediaType, unsupported).ConfigureAwait(false);
            return;
        }

        if (!TryReadHeaders(context, out var headerTimeout, out var headerPriority, out int? headerLength, out string? headerError))
        {
            await WriteErrorAsync(context, StatusCodes.Status400BadRequest, headerError).ConfigureAwait(false);
            return;
        }

        byte[]? body;
        int length;
        bool tooLarge;
        try
        {
            (body, length, tooLarge) = await ReadBodyAsync(context).ConfigureAwait(false);
        }
        catch (BadHttpRequestException ex)
        {
            // The body itself is malformed (a bad chunk, a body that ends before its Content-Length): the client's mistake.
            Log.BadRequest(_logger, model, ex.Message);
            await WriteErrorAsync(context, ex.StatusCode, $"The request body could not be read: {ex.Message}").ConfigureAwait(false);
            return;
        }

        if (tooLarge)
        {
            await WriteErrorAsync(context, StatusCodes.Status413RequestEntityTooLarge,
                $"The request body is larger than the server's limit of {_options.MaxRequestBytes} bytes.").ConfigureAwait(false);
            return;
        }

        // True when a model may still read the inputs after this handler is done: then neither the body (binary inputs
        // view it) nor the payload's buffers go back to the pool, where another request would rent and overwrite them.
        bool inputsMayBeInUse = false;
        try
        {
            InferRequestPayload payload;
            try
            {
                payload = InferRequestReader.Read(new ReadOnlyMemory<byte>(body, 0, length), headerLength ?? length);
            }
            catch (ProtocolException ex)
            {
                string message = headerLength is null ? WithHeaderLengthHint(ex.Message, body.AsSpan(0, length)) : ex.Message;
                Log.BadRequest(_logger, model, message);
                await WriteErrorAsync(context, StatusCodes.Status400BadRequest, message).ConfigureAwait(false);
                return;
            }

            try
            {
                inputsMayBeInUse = await RunAsync(context, model, version, payload, headerTimeout, headerPriority).ConfigureAwait(false);
            }
            finally
            {
                if (!inputsMayBeInUse)
                {
                    payload.Dispose();
                }
            }
        }
        finally
        {
            if (!inputsMayBeInUse)
            {
                ArrayPool<byte>.Shared.Return(body!);
            }
        }
    }

    /// <summary>Runs the request and answers it; true when it was abandoned (the caller went away) and a batch may still be reading its inputs.</summary>
    private async Task<bool> RunAsync(HttpContext context, string model, string? version, InferRequestPayload payload, TimeSpan? headerTimeout, InferencePriority? headerPriority)
    {
        InferenceResponse response;
        try
        {
            var request = new InferenceRequest(payload.Inputs)
            {
                Id = payload.Id,
                Timeout = EffectiveTimeout(headerTimeout, payload.TimeoutMicroseconds),
                Priority = EffectivePriority(headerPriority, payload.Priority),
                RequestedOutputs = payload.RequestedOutputNames(),

                // What follows the await writes the response and flushes it (non-blocking): running it on the thread that
                // finished the batch saves a thread-pool hop per request.
                AllowSynchronousContinuation = true,
            };
            response = await _client.InferAsync(model, version, request, context.RequestAborted).ConfigureAwait(false);
        }
        catch (ModelNotFoundException ex)
        {
            await WriteErrorAsync(context, StatusCodes.Status404NotFound, ex.Message).ConfigureAwait(false);
            return false;
        }
        catch (ArgumentException ex)
        {
            // InvalidInferenceRequestException (the request does not fit the signature) and the tensor factories' checks.
            string message = ex is InvalidInferenceRequestException invalid ? invalid.Message : ex.Message;
            message = message.Contains($"'{model}'", StringComparison.Ordinal) ? message : $"Model '{model}': {message}";
            Log.BadRequest(_logger, model, message);
            await WriteErrorAsync(context, StatusCodes.Status400BadRequest, message).ConfigureAwait(false);
            return false;
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The caller went away; there is no one to answer. The scheduler answers a cancelled request at once, even
            // while its batch runs (or copies its inputs): the inputs' buffers are left to the garbage collector.
            return true;
        }
        catch (ModelLoadException ex)
        {
            await WriteErrorAsync(context, StatusCodes.Status503ServiceUnavailable, ex.Message, _options.DefaultRetryAfter).ConfigureAwait(false);
            return false;
        }
#pragma warning disable CA1031 // Anything else is a server fault: log it and answer 500 so the server keeps serving.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.InferFailed(_logger, model, ex);
            await WriteErrorAsync(context, StatusCodes.Status500InternalServerError, $"Model '{model}' failed: {ex.Message}").ConfigureAwait(false);
            return false;
        }

        using (response)
        {
            switch (response.Status)
            {
                case InferenceStatus.Success:
                    WriteSuccess(context, response, payload);
                    await context.Response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
                    break;
                case InferenceStatus.DeadlineExceeded:
                    await WriteErrorAsync(context, StatusCodes.Status504GatewayTimeout,
                        $"Model '{response.Model}': the request's deadline passed before it could be answered. {response.Message}".TrimEnd()).ConfigureAwait(false);
                    break;
                default:
                    Log.Refused(_logger, response.Model, response.RefusalReason);
                    await WriteErrorAsync(context,
                        response.RefusalReason == RefusalReason.QueueFull ? StatusCodes.Status429TooManyRequests : StatusCodes.Status503ServiceUnavailable,
                        $"Model '{response.Model}' refused the request ({response.RefusalReason}). {response.Message}".TrimEnd(),
                        response.RetryAfter ?? _options.DefaultRetryAfter).ConfigureAwait(false);
                    break;
            }
        }

        return false;
    }

    private static void WriteSuccess(HttpContext context, InferenceResponse response, InferRequestPayload payload)
    {
        var outputs = response.Outputs;
        Span<OutputMode> modes = outputs.Count <= 64 ? stackalloc OutputMode[outputs.Count] : new OutputMode[outputs.Count];
        bool anyBinary = false;
        for (int i = 0; i < outputs.Count; i++)
        {
            var mode = payload.OutputMode(outputs[i].Name);
            modes[i] = mode switch
            {
                null => OutputMode.Skip,
                true => OutputMode.Binary,
                false => OutputMode.Json,
            };
            anyBinary |= mode == true;
        }

        using var json = new PooledBufferWriter(EstimateJsonSize(outputs, modes));
        var writer = JsonWriterCache.Rent(json);
        long binaryLength;
        try
        {
            binaryLength = InferResponseWriter.WriteJson(writer, response.Model, response.Version, payload.Id ?? response.RequestId, outputs, modes, response.AnsweredBy, response.Note);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        var http = context.Response;
        http.StatusCode = StatusCodes.Status200OK;
        if (anyBinary)
        {
            http.ContentType = BinaryContentType;
            http.Headers[InferKitHeaders.InferenceHeaderContentLength] = json.WrittenCount.ToString(CultureInfo.InvariantCulture);
        }
        else
        {
            http.ContentType = JsonContentType;
        }

        http.ContentLength = json.WrittenCount + binaryLength;
        var body = http.BodyWriter;
        body.Write(json.WrittenSpan);
        if (anyBinary)
        {
            InferResponseWriter.WriteBinary(body, outputs, modes);
        }
    }

    private static int EstimateJsonSize(IReadOnlyList<InferKit.Tensors.Tensor> outputs, ReadOnlySpan<OutputMode> modes)
    {
        long size = 256;
        for (int i = 0; i < outputs.Count; i++)
        {
            if (modes[i] == OutputMode.Json)
            {
                // About 12 bytes per number written as JSON.
                size += 64 + (outputs[i].ElementCount * 12);
            }
            else if (modes[i] == OutputMode.Binary)
            {
                size += 128;
            }
        }

        return (int)Math.Min(size, 1 << 20);
    }

    private TimeSpan? EffectiveTimeout(TimeSpan? header, long? parameterMicroseconds)
    {
        TimeSpan? timeout = header;

        // Triton's timeout parameter is in microseconds, and 0 means none.
        if (parameterMicroseconds is > 0)
        {
            // Any non-negative int64 is a valid parameter: one longer than a TimeSpan holds means "as long as allowed".
            long us = parameterMicroseconds.Value;
            var parameter = us >= TimeSpan.MaxValue.Ticks / TimeSpan.TicksPerMicrosecond ? TimeSpan.MaxValue : TimeSpan.FromMicroseconds(us);
            timeout = timeout is null || parameter < timeout ? parameter : timeout;
        }

        timeout ??= _options.DefaultTimeout;
        if (timeout is { } t && _options.MaxTimeout is { } max && t > max)
        {
            timeout = max;
        }

        return timeout;
    }

    private InferencePriority EffectivePriority(InferencePriority? header, InferencePriority? parameter)
    {
        // When both are given, the lower one wins: a gateway's header can lower what a body asks for, never raise it.
        InferencePriority priority = (header, parameter) switch
        {
            ({ } h, { } p) => h < p ? h : p,
            ({ } h, null) => h,
            (null, { } p) => p,
            _ => _options.DefaultPriority,
        };
        return priority > _options.MaxPriority ? _options.MaxPriority : priority;
    }

    private static bool TryReadHeaders(HttpContext context, out TimeSpan? timeout, out InferencePriority? priority, out int? headerLength, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error)
    {
        timeout = null;
        priority = null;
        headerLength = null;
        error = null;
        var headers = context.Request.Headers;
        if (headers.TryGetValue(InferKitHeaders.TimeoutMs, out var timeoutValue))
        {
            if (!long.TryParse(timeoutValue.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out long ms) || ms <= 0 || ms > (long)TimeSpan.MaxValue.TotalMilliseconds)
            {
                error = $"Header {InferKitHeaders.TimeoutMs} must be a positive integer number of milliseconds, not '{timeoutValue}'.";
                return false;
            }

            timeout = TimeSpan.FromMilliseconds(ms);
        }

        if (headers.TryGetValue(InferKitHeaders.Priority, out var priorityValue))
        {
            if (!PriorityParser.TryParse(priorityValue.ToString(), out var p))
            {
                error = $"Header {InferKitHeaders.Priority} must be one of {PriorityParser.Expected}, not '{priorityValue}'.";
                return false;
            }

            priority = p;
        }

        if (headers.TryGetValue(InferKitHeaders.InferenceHeaderContentLength, out var lengthValue))
        {
            if (!int.TryParse(lengthValue.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out int length))
            {
                error = $"Header {InferKitHeaders.InferenceHeaderContentLength} must be the byte length of the JSON part, a non-negative integer, not '{lengthValue}'.";
                return false;
            }

            headerLength = length;
        }

        return true;
    }

    /// <summary>
    /// Null when the body is bytes this endpoint can read: no content coding (or <c>identity</c>), and JSON in UTF-8, the
    /// only encoding JSON may use between systems (RFC 8259). Otherwise the reason, naming the header and what it said, so
    /// that a gzip body is not answered as "malformed JSON" and an unknown coding is not read as if it were plain.
    /// The Content-Type itself is not checked: Triton's clients and curl send several.
    /// </summary>
    private static string? UnsupportedBodyEncoding(HttpRequest request, out bool isContentCoding)
    {
        isContentCoding = false;
        var coding = request.Headers.ContentEncoding;
        if (coding.Count > 0)
        {
            string value = coding.ToString().Trim();
            if (value.Length > 0 && !string.Equals(value, "identity", StringComparison.OrdinalIgnoreCase))
            {
                isContentCoding = true;
                return $"Content-Encoding '{value}' is not supported: send the body uncompressed (identity), or add ASP.NET Core's request decompression middleware (UseRequestDecompression) before the endpoints.";
            }
        }

        string? contentType = request.ContentType;
        if (contentType is not null
            && contentType.Contains("charset", StringComparison.OrdinalIgnoreCase)
            && Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var mediaType))
        {
            var charset = Microsoft.Net.Http.Headers.HeaderUtilities.RemoveQuotes(mediaType.Charset);
            if (charset.HasValue
                && !charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase)
                && !charset.Equals("utf8", StringComparison.OrdinalIgnoreCase)
                && !charset.Equals("us-ascii", StringComparison.OrdinalIgnoreCase))
            {
                return $"Content-Type charset '{charset}' is not supported: send the JSON as UTF-8.";
            }
        }

        return null;
    }

    /// <summary>
    /// For a body sent without <c>Inference-Header-Content-Length</c> that failed to parse: when it holds one whole JSON
    /// value followed by more bytes (binary tensor data, most likely, sent without its header), says so and names the
    /// header; the JSON reader alone only says that something follows the JSON. Runs on the error path only.
    /// </summary>
    private static string WithHeaderLengthHint(string message, ReadOnlySpan<byte> body)
    {
        var reader = new System.Text.Json.Utf8JsonReader(body);
        try
        {
            if (!reader.Read() || reader.TokenType != System.Text.Json.JsonTokenType.StartObject)
            {
                return message;
            }

            reader.Skip();
        }
        catch (System.Text.Json.JsonException)
        {
            return message;
        }

        var rest = body[(int)reader.BytesConsumed..].TrimStart(" \t\r\n"u8);
        return rest.IsEmpty
            ? message
            : $"{message} The JSON ends after {reader.BytesConsumed} bytes and {rest.Length} more follow: to send binary tensor data after the JSON, give the JSON's length in the {InferKitHeaders.InferenceHeaderContentLength} header.";
    }

    /// <summary>Reads the whole body into a pooled buffer, enforcing <see cref="InferKitEndpointOptions.MaxRequestBytes"/>.</summary>
    private async ValueTask<(byte[]? Body, int Length, bool TooLarge)> ReadBodyAsync(HttpContext context)
    {
        long limit = _options.MaxRequestBytes;
        if (context.Request.ContentLength > limit)
        {
            return (null, 0, true);
        }

        // Kestrel's own limit (30 MB by default) would stop a body this endpoint allows; ours is checked below.
        var sizeFeature = context.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (sizeFeature is { IsReadOnly: false })
        {
            sizeFeature.MaxRequestBodySize = limit;
        }

        long? declared = context.Request.ContentLength;
        var buffer = ArrayPool<byte>.Shared.Rent(declared is > 0 ? (int)declared.Value : 16 * 1024);
        int total = 0;
        var reader = context.Request.BodyReader;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(context.RequestAborted).ConfigureAwait(false);
                var sequence = result.Buffer;
                if (total + sequence.Length > limit)
                {
                    reader.AdvanceTo(sequence.End);
                    ArrayPool<byte>.Shared.Return(buffer);
                    return (null, 0, true);
                }

                if (total + sequence.Length > buffer.Length)
                {
                    var bigger = ArrayPool<byte>.Shared.Rent((int)Math.Min(limit, Math.Max((long)buffer.Length * 2, total + sequence.Length)));
                    buffer.AsSpan(0, total).CopyTo(bigger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = bigger;
                }

                sequence.CopyTo(buffer.AsSpan(total));
                total += (int)sequence.Length;
                reader.AdvanceTo(sequence.End);
                if (result.IsCompleted)
                {
                    return (buffer, total, false);
                }
            }
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return (null, 0, true);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    private bool TryGetModel(HttpContext context, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out ModelInfo? model, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error)
    {
        string name = (string)context.Request.RouteValues["model"]!;
        string? version = context.Request.RouteValues["version"] as string;
        try
        {
            model = _registry.GetModel(name, version);
            error = null;
            return true;
        }
        catch (ModelNotFoundException ex)
        {
            model = null;
            error = ex.Message;
            return false;
        }
    }

    private static Task WriteFlagAsync(HttpContext context, int status, ReadOnlySpan<byte> property, bool value)
    {
        using var buffer = new PooledBufferWriter(64);
        var writer = JsonWriterCache.Rent(buffer);
        try
        {
            MetadataWriter.WriteFlag(writer, property, value);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        return WriteJsonAsync(context, status, buffer);
    }

    private static Task WriteErrorAsync(HttpContext context, int status, string message, TimeSpan? retryAfter = null)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        if (retryAfter is { } r)
        {
            long seconds = Math.Max(1, (long)Math.Ceiling(r.TotalSeconds));
            context.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        }

        using var buffer = new PooledBufferWriter(message.Length + 32);
        var writer = JsonWriterCache.Rent(buffer);
        try
        {
            MetadataWriter.WriteError(writer, message);
        }
        finally
        {
            JsonWriterCache.Return(writer);
        }

        return WriteJsonAsync(context, status, buffer);
    }

    /// <summary>Copies <paramref name="buffer"/> into the response at once (so the caller may dispose it) and flushes.</summary>
    private static async Task WriteJsonAsync(HttpContext context, int status, PooledBufferWriter buffer)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = JsonContentType;
        response.ContentLength = buffer.WrittenCount;
        response.BodyWriter.Write(buffer.WrittenSpan);
        await response.BodyWriter.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 5001, Level = LogLevel.Debug, Message = "Request to model {Model} is invalid: {Reason}")]
        public static partial void BadRequest(ILogger logger, string model, string reason);

        [LoggerMessage(EventId = 5002, Level = LogLevel.Debug, Message = "Model {Model} refused a request: {Reason}")]
        public static partial void Refused(ILogger logger, string model, RefusalReason reason);

        [LoggerMessage(EventId = 5003, Level = LogLevel.Error, Message = "Inference on model {Model} failed")]
        public static partial void InferFailed(ILogger logger, string model, Exception exception);
    }
}
