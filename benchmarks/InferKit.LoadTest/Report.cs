using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace InferKit.LoadTest;

/// <summary>Turns the rows into a markdown table with the issue goals checked, a JSON array and a chart.</summary>
internal static class Report
{
    public const string Closed1 = "closed-1";
    public const string Closed64 = "closed-64";
    public const string Open2x = "open-2x";
    public const string SlowInstance = "slow-instance";
    public const string HealthyPeer = "4-healthy";

    public static string Markdown(IReadOnlyList<PeerStats> rows, IReadOnlyList<string> notes, string header)
    {
        var md = new StringBuilder();
        md.AppendLine(header);
        md.AppendLine();
        md.AppendLine("| scenario | peer | callers | rate/s | throughput/s | p50 ms | p95 ms | p99 ms | errors | refused | expired | late | goodput/s | refusal p99 ms | mean batch | heap MB before→after (peak) |");
        md.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in rows)
        {
            string heap = r.HeapBeforeMb is double b && r.HeapAfterMb is double a ? Inv($"{b:F1}→{a:F1} ({r.HeapPeakMb:F1})") : "";
            string batch = r.BatchSize is int bs ? bs.ToString(CultureInfo.InvariantCulture) : F(r.MeanBatch, "F1");
            md.AppendLine(Inv($"| {r.Scenario} | {r.Peer} | {r.Callers} | {(r.Rate > 0 ? r.Rate.ToString("N0", CultureInfo.InvariantCulture) : "")} | {r.ThroughputPerSecond:N0} | {F(r.Latency.PercentileMs(0.50))} | {F(r.Latency.PercentileMs(0.95))} | {F(r.Latency.PercentileMs(0.99))} | {r.Errors} | {r.Refused} | {r.Expired} | {r.Late} | {(r.GoodputPerSecond is double g ? g.ToString("N0", CultureInfo.InvariantCulture) : "")} | {(r.Refused > 0 ? F(r.RefusalLatency.PercentileMs(0.99), "F3") : "")} | {batch} | {heap} |"));
        }

        var goals = Goals(rows);
        if (goals.Count > 0)
        {
            md.AppendLine();
            md.AppendLine("| goal | measured | target | verdict |");
            md.AppendLine("|---|---:|---|---|");
            foreach (var (goal, measured, target, met) in goals)
            {
                md.AppendLine(Inv($"| {goal} | {measured} | {target} | {(met ? "met" : "**NOT met**")} |"));
            }
        }

        if (notes.Count > 0)
        {
            md.AppendLine();
            foreach (var n in notes)
            {
                md.AppendLine("- " + n);
            }
        }

        return md.ToString();
    }

    public static List<(string Goal, string Measured, string Target, bool Met)> Goals(IReadOnlyList<PeerStats> rows)
    {
        var goals = new List<(string, string, string, bool)>();
        PeerStats? Row(string scenario, string peer) => rows.FirstOrDefault(r => r.Scenario == scenario && r.Peer == peer);

        if (Row(Closed64, "inferkit") is { } i64)
        {
            if (Row(Closed64, "naive") is { } n64)
            {
                double ratio = i64.ThroughputPerSecond / n64.ThroughputPerSecond;
                goals.Add(("64 callers: inferkit / naive throughput", Inv($"{ratio:F2}×"), "≥ 2.5×", ratio >= 2.5));
                double p99i = i64.Latency.PercentileMs(0.99), p99n = n64.Latency.PercentileMs(0.99);
                goals.Add(("64 callers: inferkit p99 vs naive p99", Inv($"{p99i:F2} vs {p99n:F2} ms"), "below naive", p99i < p99n));
            }

            if (Row(Closed64, "ceiling") is { } c64)
            {
                double ratio = i64.ThroughputPerSecond / c64.ThroughputPerSecond;
                string context = Row(Closed64, "ceiling-64") is { } c64b
                    ? Inv($" (against raw ONNX Runtime at batch 64, the largest batch 64 callers can fill: {i64.ThroughputPerSecond / c64b.ThroughputPerSecond:F2}×)")
                    : "";
                goals.Add(("64 callers: inferkit / ceiling throughput", Inv($"{ratio:F2}×{context}"), "≥ 0.85×", ratio >= 0.85));
            }
        }

        if (Row(Closed1, "inferkit") is { } i1 && Row(Closed1, "naive") is { } n1)
        {
            double ratio = i1.Latency.PercentileMs(0.5) / n1.Latency.PercentileMs(0.5);
            goals.Add(("1 caller: inferkit median / raw session.Run median", Inv($"{ratio:F2}× ({i1.Latency.PercentileMs(0.5):F3} vs {n1.Latency.PercentileMs(0.5):F3} ms)"), "≤ 1.2×", ratio <= 1.2));
        }

        if (Row(Open2x, "inferkit") is { } o && o.Extra.TryGetValue("capacity_per_s", out var capacity) && o.GoodputPerSecond is double goodput)
        {
            // The median of paired rounds (each round's capacity probe, then its open loop), when the run has them.
            double ratio = o.Extra.TryGetValue("goodput_ratio", out var paired) ? paired : goodput / capacity;
            bool overloaded = o.Extra.TryGetValue("overloaded", out var ov) && ov > 0;
            // The generator shares the cores: when it cannot fire arrivals as fast as asked, the load offered is less than 2x.
            string offered = o.Extra.TryGetValue("offered_per_s", out var reached) && !double.IsNaN(reached)
                ? Inv($"; offered {reached / capacity:F2}× capacity{(reached < 0.95 * o.Rate ? Inv($": the generator reached {reached:N0} of the {o.Rate:N0} arrivals/s asked for") : "")}")
                : "";
            goals.Add(("open loop 2× capacity: goodput / capacity", Inv($"{ratio:P0} (median round; whole run {goodput:N0} of {capacity:N0}/s{offered}){(overloaded ? "" : "; NOT an overload: under 1% refused or expired, so the closed-loop capacity under-measures InferKit")}"), "≥ 90%", ratio >= 0.9));
            goals.Add(("open loop: successes taken by the caller after its deadline (clock read before taking the result, deadline from the InferAsync call)", Inv($"{o.Late} of {o.Ok}{(o.Late > 0 ? $", at most {o.LateMaxMs:F3} ms late" : "")} (delivery hop p99 {o.DeliveryLag.PercentileMs(0.99):F2} ms; taken in time but the caller's clock read after taking it was past the deadline: {o.LateAfterRead}{(o.LateAfterRead > 0 ? $", at most {o.LateAfterReadMaxMs:F3} ms" : "")})"), "0", o.Late == 0));
            goals.Add(("open loop: answers whose batch ended after the deadline (QueueTime + ComputeTime)", Inv($"{o.ServerLate}"), "0", o.ServerLate == 0));
            if (o.Refused > 0)
            {
                double p99 = o.RefusalLatency.PercentileMs(0.99);
                goals.Add(("open loop: refusal latency p99", Inv($"{p99:F3} ms"), "< 1 ms", p99 < 1));
            }

            if (o.HeapBeforeMb is double before && o.HeapAfterMb is double after)
            {
                bool flat = after <= (before * 1.1) + 2;
                goals.Add(("open loop: live managed heap before → after (full GC), working set", Inv($"{before:F1} → {after:F1} MB, {o.WorkingSetBeforeMb:F0} → {o.WorkingSetAfterMb:F0} MB; generator objects added during the run (released before the after measurement): {(o.Extra.TryGetValue("generator_calls_created", out var calls) ? calls : 0):F0}"), "flat (≤ +10% + 2 MB)", flat));
            }
        }

        if (Row(SlowInstance, HealthyPeer) is { } healthy)
        {
            double baseP99 = healthy.Latency.PercentileMs(0.99);
            foreach (var r in rows.Where(r => r.Scenario == SlowInstance && r.Peer != HealthyPeer))
            {
                double ratio = r.Latency.PercentileMs(0.99) / baseP99;
                bool contrast = r.Peer == "RoundRobin";
                goals.Add(($"one instance 5× slower: {r.Peer} p99 / 4 healthy p99{(contrast ? " (contrast)" : "")}", Inv($"{ratio:F2}×"), contrast ? "shown for contrast" : "≤ 1.5×", contrast || ratio <= 1.5));
            }
        }

        return goals;
    }

    public static string Json(IReadOnlyList<PeerStats> rows)
    {
        var array = new JsonArray();
        foreach (var r in rows)
        {
            var o = new JsonObject
            {
                ["scenario"] = r.Scenario,
                ["peer"] = r.Peer,
                ["callers"] = r.Callers,
                ["rate"] = r.Rate > 0 ? Num(r.Rate) : null,
                ["throughput_per_s"] = Num(r.ThroughputPerSecond),
                ["p50_ms"] = Num(r.Latency.PercentileMs(0.50)),
                ["p95_ms"] = Num(r.Latency.PercentileMs(0.95)),
                ["p99_ms"] = Num(r.Latency.PercentileMs(0.99)),
                ["errors"] = r.Errors,
                ["refused"] = r.Refused,
                ["expired"] = r.Expired,
                ["late"] = r.Late,
                ["late_max_ms"] = r.Late > 0 ? Num(r.LateMaxMs) : null,
                ["late_after_read"] = r.LateAfterRead,
                ["late_after_read_max_ms"] = r.LateAfterRead > 0 ? Num(r.LateAfterReadMaxMs) : null,
                ["late_from_arrival"] = r.LateFromArrival,
                ["server_late"] = r.ServerLate,
                ["delivery_lag_p99_ms"] = r.DeliveryLag.Count > 0 ? Num(r.DeliveryLag.PercentileMs(0.99)) : null,
                ["completed"] = r.Ok,
                ["seconds"] = Num(r.Seconds),
                ["max_ms"] = Num(r.Latency.MaxMs),
                ["mean_batch"] = r.BatchSize is int b ? b : Num(r.MeanBatch),
                ["goodput_per_s"] = r.GoodputPerSecond is double g ? Num(g) : null,
                ["refusal_p99_ms"] = r.Refused > 0 ? Num(r.RefusalLatency.PercentileMs(0.99)) : null,
                ["dispatch_lag_p99_ms"] = r.DispatchLag.Count > 0 ? Num(r.DispatchLag.PercentileMs(0.99)) : null,
                ["generator_lag_p99_ms"] = r.GeneratorLag.Count > 0 ? Num(r.GeneratorLag.PercentileMs(0.99)) : null,
                ["heap_before_mb"] = r.HeapBeforeMb is double hb ? Num(hb) : null,
                ["heap_after_mb"] = r.HeapAfterMb is double ha ? Num(ha) : null,
                ["heap_peak_mb"] = r.HeapPeakMb is double hp ? Num(hp) : null,
                ["working_set_before_mb"] = r.WorkingSetBeforeMb is double wb ? Num(wb) : null,
                ["working_set_after_mb"] = r.WorkingSetAfterMb is double wa ? Num(wa) : null,
                ["first_error"] = r.FirstError,
                ["note"] = r.Note,
            };
            foreach (var (key, value) in r.Extra)
            {
                o[key] = Num(value);
            }

            array.Add(o);
        }

        return array.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Throughput against p99 latency, one series per peer, each point labelled with its scenario; latency on a log axis.</summary>
    public static void Chart(IReadOnlyList<PeerStats> rows, string path, string title)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int series = 0;
        foreach (var group in rows.GroupBy(r => r.Peer))
        {
            var points = group.Where(r => r.ThroughputPerSecond > 0 && r.Latency.PercentileMs(0.99) > 0).ToArray();
            if (points.Length == 0)
            {
                continue;
            }

            double[] xs = points.Select(r => r.ThroughputPerSecond / 1000).ToArray();
            double[] ys = points.Select(r => Math.Log10(r.Latency.PercentileMs(0.99))).ToArray();
            var color = palette.GetColor(series++);
            var scatter = plot.Add.ScatterPoints(xs, ys, color);
            scatter.LegendText = group.Key;
            scatter.MarkerSize = 10;
            for (int i = 0; i < points.Length; i++)
            {
                var label = plot.Add.Text(points[i].Scenario, xs[i], ys[i]);
                label.LabelFontSize = 11;
                label.LabelFontColor = color;
                label.LabelOffsetX = 7;
                label.LabelOffsetY = -7;
            }
        }

        plot.Axes.Left.TickGenerator = LogTicks();
        plot.Title(title);
        plot.XLabel("throughput (thousand rows/s)");
        plot.YLabel("p99 latency (ms, log scale)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        plot.Axes.Margins(0.15, 0.15);
        plot.SavePng(path, 1200, 750);
    }

    private static ScottPlot.TickGenerators.NumericAutomatic LogTicks() => new()
    {
        MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
        IntegerTicksOnly = true,
        LabelFormatter = static v => Math.Pow(10, v).ToString("G4", CultureInfo.InvariantCulture),
    };

    private static JsonValue? Num(double value) => double.IsFinite(value) ? JsonValue.Create(Math.Round(value, 4)) : null;

    private static string F(double value, string format = "F3") => double.IsFinite(value) ? value.ToString(format, CultureInfo.InvariantCulture) : "";

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
