namespace InferKit.Scheduling;

/// <summary>
/// One reusable array of <typeparamref name="T"/> per thread, for work that needs it only while a synchronous call runs
/// (validating a request, reading a request body). <see cref="Take"/> hands it out until <see cref="Return"/>; a call
/// nested in between (from a listener's callback) gets a new array of its own.
/// </summary>
internal static class ThreadScratch<T>
{
    [ThreadStatic]
    private static T[]? t_array;

    /// <summary>This thread's array when it holds at least <paramref name="minLength"/> elements, else a new one.</summary>
    public static T[] Take(int minLength)
    {
        var array = t_array;
        if (array is null || array.Length < minLength)
        {
            return new T[Math.Max(minLength, 4)];
        }

        t_array = null;
        return array;
    }

    /// <summary>
    /// Clears the first <paramref name="used"/> elements (the array never keeps a request's objects alive) and keeps the
    /// array for this thread's next call, unless it is longer than <paramref name="maxKept"/>.
    /// </summary>
    public static void Return(T[] array, int used, int maxKept)
    {
        array.AsSpan(0, used).Clear();
        if (array.Length <= maxKept)
        {
            t_array = array;
        }
    }
}
