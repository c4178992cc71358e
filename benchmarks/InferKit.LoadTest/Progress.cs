using System.Diagnostics;
using System.Globalization;

namespace InferKit.LoadTest;

/// <summary>One live line per scenario/peer slice: answers so far, rate, errors, refusals. Rewritten in place on a terminal.</summary>
internal sealed class Progress : IDisposable
{
    private static readonly Lock ConsoleGate = new();
    private readonly string _label;
    private readonly PeerStats _stats;
    private readonly long _okAtStart;
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly Timer _timer;
    private readonly bool _inPlace = !Console.IsOutputRedirected;
    private int _ticks;
    private bool _done;

    public Progress(string label, PeerStats stats)
    {
        _label = label;
        _stats = stats;
        _okAtStart = stats.Ok;
        _timer = new Timer(_ => Print(final: false), null, 500, 500);
    }

    public void Dispose()
    {
        _timer.Dispose();
        Print(final: true);
    }

    private void Print(bool final)
    {
        lock (ConsoleGate)
        {
            if (_done)
            {
                return;
            }

            _ticks++;
            if (!final && !_inPlace && _ticks % 10 != 0)
            {
                return;
            }

            double seconds = Stopwatch.GetElapsedTime(_start).TotalSeconds;
            long ok = _stats.Ok - _okAtStart;
            var line = string.Create(CultureInfo.InvariantCulture,
                $"  {_label}: {seconds,5:F1} s  {ok,10:N0} ok  {ok / Math.Max(seconds, 1e-9),10:N0}/s  errors {_stats.Errors:N0}  refused {_stats.Refused:N0}  expired {_stats.Expired:N0}");
            if (_inPlace)
            {
                Console.Write("\r" + line.PadRight(Math.Max(line.Length, 110)));
                if (final)
                {
                    Console.WriteLine();
                }
            }
            else
            {
                Console.WriteLine(line);
            }

            _done = final;
        }
    }
}
