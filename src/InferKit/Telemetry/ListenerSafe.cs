using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace InferKit.Telemetry;

/// <summary>
/// Recording a measurement or starting and stopping a span runs the user's <see cref="MeterListener"/> and
/// <see cref="ActivityListener"/> callbacks synchronously, on the request path or a background thread. A callback that
/// throws must not fail a request, a load or a batch, nor kill the process: these wrappers swallow what it throws.
/// </summary>
internal static class ListenerSafe
{
    public static void SafeRecord<T>(this Histogram<T> histogram, T value, in TagList tags)
        where T : struct
    {
        try
        {
            histogram.Record(value, in tags);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A listener's failure; the measurement is lost to that listener only.
        }
    }

    public static void SafeAdd<T>(this Counter<T> counter, T delta, in TagList tags)
        where T : struct
    {
        try
        {
            counter.Add(delta, in tags);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A listener's failure; the measurement is lost to that listener only.
        }
    }

    /// <summary>Starts a span; null when a listener's callback threw (the thread's <see cref="Activity.Current"/> is put back).</summary>
    public static Activity? SafeStartActivity(this ActivitySource source, string name, ActivityKind kind, ActivityContext parent = default,
        IEnumerable<ActivityLink>? links = null)
    {
        var current = Activity.Current;
        try
        {
            return source.StartActivity(name, kind, parent, tags: null, links: links);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            if (!ReferenceEquals(Activity.Current, current))
            {
                Activity.Current = current;
            }

            return null;
        }
    }

    /// <summary>Stops a span; a listener's failure in ActivityStopped is swallowed (the caller restores Activity.Current).</summary>
    public static void SafeStop(this Activity activity)
    {
        try
        {
            activity.Stop();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A listener's failure.
        }
    }

    /// <summary>Records an exception on a span; a listener's ExceptionRecorder that throws is swallowed.</summary>
    public static void SafeAddException(this Activity activity, Exception exception)
    {
        try
        {
            activity.AddException(exception);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A listener's failure.
        }
    }
}
