using System.Globalization;

namespace InferKit.LoadTest;

/// <summary>
/// The machine's CPU time counters (Linux <c>/proc/stat</c>, in clock ticks): on a virtual machine the steal counter is
/// the time the hypervisor gave these cores to other guests, which slows a run in ways its own numbers cannot show.
/// </summary>
internal readonly record struct CpuTimes(long Total, long Steal)
{
    /// <summary>The counters now, or null where <c>/proc/stat</c> cannot be read.</summary>
    public static CpuTimes? Read()
    {
        try
        {
            if (!File.Exists("/proc/stat"))
            {
                return null;
            }

            using var reader = new StreamReader("/proc/stat");
            return Parse(reader.ReadLine());
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>
    /// Parses the aggregate line: "cpu user nice system idle iowait irq softirq steal [guest guest_nice]". Guest time
    /// is already counted in user time, so the total is the first eight values. Null for any other line.
    /// </summary>
    public static CpuTimes? Parse(string? line)
    {
        var parts = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts is null || parts.Length < 5 || parts[0] != "cpu")
        {
            return null;
        }

        long total = 0;
        long steal = 0;
        for (int i = 1; i < parts.Length && i <= 8; i++)
        {
            if (!long.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out long value))
            {
                return null;
            }

            total += value;
            if (i == 8)
            {
                steal = value;
            }
        }

        return new CpuTimes(total, steal);
    }

    /// <summary>"CPU time stolen by the hypervisor: X%" between two readings, or why it is unknown.</summary>
    public static string StolenText(CpuTimes? before, CpuTimes? after)
    {
        if (before is not { } b || after is not { } a || a.Total <= b.Total)
        {
            return "CPU time stolen by the hypervisor: not reported here";
        }

        double share = 100.0 * (a.Steal - b.Steal) / (a.Total - b.Total);
        return string.Create(CultureInfo.InvariantCulture, $"CPU time stolen by the hypervisor: {share:F1}%");
    }
}
