namespace InferKit.LoadTest;

/// <summary>
/// The garbage collector's work over one measured run of a peer, added to its row: bytes allocated by the whole process
/// (the callers' own request objects included), gen0 collections and the time every thread was paused for collections.
/// The per-request and per-second figures are derived when the report is written.
/// </summary>
internal sealed class GcWindow : IDisposable
{
    private readonly PeerStats _stats;
    private readonly long _allocated = GC.GetTotalAllocatedBytes(precise: false);
    private readonly int _gen0 = GC.CollectionCount(0);
    private readonly TimeSpan _paused = GC.GetTotalPauseDuration();

    public GcWindow(PeerStats stats) => _stats = stats;

    public void Dispose()
    {
        var extra = _stats.Extra;
        extra["gc_allocated_bytes"] = extra.GetValueOrDefault("gc_allocated_bytes") + (GC.GetTotalAllocatedBytes(precise: false) - _allocated);
        extra["gc_gen0_collections"] = extra.GetValueOrDefault("gc_gen0_collections") + (GC.CollectionCount(0) - _gen0);
        extra["gc_pause_s"] = extra.GetValueOrDefault("gc_pause_s") + (GC.GetTotalPauseDuration() - _paused).TotalSeconds;
    }

    /// <summary>"N B allocated per answered request, M gen0 collections/s, P% of the time paused", or null when nothing ran.</summary>
    public static string? Describe(PeerStats stats)
    {
        long answered = stats.Ok + stats.Refused + stats.Expired;
        if (answered == 0 || stats.Seconds <= 0 || !stats.Extra.TryGetValue("gc_allocated_bytes", out var bytes))
        {
            return null;
        }

        return FormattableString.Invariant(
            $"{bytes / answered:N0} B allocated per answered request, {stats.Extra["gc_gen0_collections"] / stats.Seconds:N0} gen0 collections/s, {100 * stats.Extra["gc_pause_s"] / stats.Seconds:F1}% of the time paused for collections");
    }
}
