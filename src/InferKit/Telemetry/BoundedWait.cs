namespace InferKit.Telemetry;

/// <summary>Waits for user code (observers, sink callbacks) at most a set time, so that disposal cannot hang on it.</summary>
internal static class BoundedWait
{
    /// <summary>
    /// Starts <paramref name="start"/>'s work once the bound's timer exists (on <paramref name="time"/>), so work seen
    /// running is already timed; true when it ended within <paramref name="limit"/>, false when it is left running.
    /// </summary>
    public static async Task<bool> CompletesWithinAsync(Func<Task> start, TimeSpan limit, TimeProvider time)
    {
        using var stop = new CancellationTokenSource();
        var timeout = Task.Delay(limit, time, stop.Token);
        var work = start();
        if (await Task.WhenAny(work, timeout).ConfigureAwait(false) != work)
        {
            return false;
        }

        stop.Cancel();
        return true;
    }
}
