namespace InferKit;

/// <summary>
/// The checks every model (real or virtual) makes on a request's scheduling fields, and how its
/// <see cref="InferenceRequest.Timeout"/> reads: <see cref="Timeout.InfiniteTimeSpan"/> (the .NET convention) asks for
/// no timeout, not even a model's default; any other negative value is bad input; a timeout too long for a clock
/// saturates at "never" instead of wrapping around into the past.
/// </summary>
internal static class RequestChecks
{
    /// <summary>
    /// Throws when the request's timeout is negative and not <see cref="Timeout.InfiniteTimeSpan"/>, or its priority is
    /// not an <see cref="InferencePriority"/>.
    /// </summary>
    /// <exception cref="InvalidInferenceRequestException">Naming the model, the field and the value.</exception>
    public static void Check(string model, InferenceRequest request)
    {
        if (request.Timeout is TimeSpan t && t < TimeSpan.Zero && t != Timeout.InfiniteTimeSpan)
        {
            throw new InvalidInferenceRequestException(model, null,
                $"Model '{model}': the request's timeout must not be negative (was {t}); use Timeout.InfiniteTimeSpan for no timeout.");
        }

        if ((uint)request.Priority > (uint)InferencePriority.Critical)
        {
            throw new InvalidInferenceRequestException(model, null,
                $"Model '{model}': the request's priority must be Low, Normal, High or Critical (was {(int)request.Priority}).");
        }
    }

    /// <summary>The request's own finite timeout, or null (none given, or infinite).</summary>
    public static TimeSpan? Finite(InferenceRequest request) => IsInfinite(request) ? null : request.Timeout;

    /// <summary>
    /// The request's own finite timeout; else <paramref name="fallback"/> (a model's default) when the request has
    /// neither a timeout nor a deadline; null when it asks for no timeout at all or only has a deadline.
    /// </summary>
    public static TimeSpan? FiniteOr(InferenceRequest request, TimeSpan? fallback)
        => Finite(request) ?? (request.Deadline is null && !IsInfinite(request) ? fallback : null);

    /// <summary>
    /// The request's deadline as of <paramref name="now"/>: the earlier of its <see cref="InferenceRequest.Deadline"/> and
    /// <paramref name="now"/> plus its finite timeout (else <paramref name="fallback"/>, see <see cref="FiniteOr"/>); null
    /// when it has no deadline at all.
    /// </summary>
    public static DateTimeOffset? Deadline(InferenceRequest request, TimeSpan? fallback, DateTimeOffset now)
    {
        var deadline = request.Deadline;
        if (FiniteOr(request, fallback) is TimeSpan t && After(now, t) is var byTimeout && (deadline is null || byTimeout < deadline))
        {
            deadline = byTimeout;
        }

        return deadline;
    }

    /// <summary>True when the request asks for no timeout at all (<see cref="Timeout.InfiniteTimeSpan"/>), not even a model's default.</summary>
    public static bool IsInfinite(InferenceRequest request) => request.Timeout == Timeout.InfiniteTimeSpan;

    /// <summary>
    /// The timeout a virtual model gives the request it sends a member, whose deadline it has fixed already:
    /// <see cref="Timeout.InfiniteTimeSpan"/> when the caller asked for no timeout at all (so the member does not apply its
    /// default), else none.
    /// </summary>
    public static TimeSpan? ForMember(InferenceRequest request) => IsInfinite(request) ? Timeout.InfiniteTimeSpan : null;

    /// <summary><paramref name="now"/> + <paramref name="span"/>, or <see cref="DateTimeOffset.MaxValue"/> past it.</summary>
    public static DateTimeOffset After(DateTimeOffset now, TimeSpan span)
        => span >= DateTimeOffset.MaxValue - now ? DateTimeOffset.MaxValue : now + span;

    /// <summary>
    /// The timestamp <paramref name="span"/> after <paramref name="now"/> on a clock of <paramref name="frequency"/>
    /// ticks per second: <see cref="long.MaxValue"/> (never) when it would not fit.
    /// </summary>
    public static long After(long now, TimeSpan span, long frequency)
    {
        double ticks = span.TotalSeconds * frequency;
        if (ticks >= (double)(long.MaxValue - now))
        {
            return long.MaxValue;
        }

        return ticks <= (double)(long.MinValue + Math.Max(0, now)) ? long.MinValue : now + (long)ticks;
    }
}
