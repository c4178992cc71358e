using System.Globalization;
using System.Text;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace InferKit.Benchmarks;

/// <summary>
/// Runs the single-caller micro-benchmarks with a short in-process job (about a minute on 2 cores), then prints and
/// writes the ratios to the raw call and the allocations per request.
/// Arguments: <c>--full</c> uses BenchmarkDotNet's default job (slower, tighter intervals); <c>--out DIR</c> sets where
/// results go (default benchmarks/results/bdn); anything else goes to BenchmarkDotNet (for example <c>--filter *Raw*</c>).
/// </summary>
internal static class Program
{
    public static int Main(string[] args)
    {
        bool full = false;
        string? outDir = null;
        var rest = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--full":
                    full = true;
                    break;
                case "--out" when i + 1 < args.Length:
                    outDir = args[++i];
                    break;
                default:
                    rest.Add(args[i]);
                    break;
            }
        }

        outDir ??= Path.Combine(RepoRoot() ?? Directory.GetCurrentDirectory(), "benchmarks", "results", "bdn");
        var job = full
            ? Job.Default.WithId("Default")
            : Job.Default.WithId("Quick")
                .WithLaunchCount(1)
                .WithWarmupCount(4)
                .WithIterationCount(12)
                .WithIterationTime(TimeInterval.FromMilliseconds(250));
        job = job.WithToolchain(InProcessEmitToolchain.Instance);

        var config = DefaultConfig.Instance
            .AddJob(job.AsDefault())
            .AddColumn(StatisticColumn.Median, StatisticColumn.P95)
            .WithArtifactsPath(outDir)
            .WithOptions(ConfigOptions.JoinSummary);

        var summary = BenchmarkRunner.Run<SingleCallerBenchmarks>(config, rest.ToArray());
        return Report(summary, outDir);
    }

    private static int Report(Summary summary, string outDir)
    {
        var baseline = summary.Reports.FirstOrDefault(r => r.BenchmarkCase.Descriptor.Baseline);
        if (baseline?.ResultStatistics is null)
        {
            Console.Error.WriteLine("No result for the raw baseline; nothing to compare.");
            return summary.Reports.Length == 0 ? 1 : 0;
        }

        double rawMedian = baseline.ResultStatistics.Median;
        double rawMean = baseline.ResultStatistics.Mean;
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"# InferKit single-caller benchmark ({DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, load average {LoadAverage()})");
        text.AppendLine();
        text.AppendLine("| benchmark | median µs | mean µs | median ratio to raw | mean ratio to raw | allocated B/request | work items/request |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var r in summary.Reports)
        {
            if (r.ResultStatistics is null)
            {
                continue;
            }

            var allocated = r.GcStats.GetBytesAllocatedPerOperation(r.BenchmarkCase);
            var workItems = r.Metrics.TryGetValue("CompletedWorkItemCount", out var m) ? m.Value.ToString("0.####", CultureInfo.InvariantCulture) : "-";
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {r.BenchmarkCase.Descriptor.WorkloadMethodDisplayInfo} | {r.ResultStatistics.Median / 1000:F2} | {r.ResultStatistics.Mean / 1000:F2} | {r.ResultStatistics.Median / rawMedian:F3} | {r.ResultStatistics.Mean / rawMean:F3} | {allocated?.ToString(CultureInfo.InvariantCulture) ?? "-"} | {workItems} |");
        }

        var plain = Find(summary, nameof(SingleCallerBenchmarks.InferAsync));
        var metered = Find(summary, nameof(SingleCallerBenchmarks.InferAsync_Metrics));
        text.AppendLine();
        if (plain?.ResultStatistics is not null)
        {
            double ratio = plain.ResultStatistics.Median / rawMedian;
            text.AppendLine(CultureInfo.InvariantCulture, $"InferAsync / raw (median): {ratio:F3} (goal ≤ 1.2: {(ratio <= 1.2 ? "met" : "NOT met")}); allocated per request: {plain.GcStats.GetBytesAllocatedPerOperation(plain.BenchmarkCase)} B.");
        }

        if (plain?.ResultStatistics is not null && metered?.ResultStatistics is not null)
        {
            double ratio = metered.ResultStatistics.Median / plain.ResultStatistics.Median;
            text.AppendLine(CultureInfo.InvariantCulture, $"With MeterListener / without (median): {ratio:F3} (goal ≤ 1.05: {(ratio <= 1.05 ? "met" : "NOT met")}).");
        }

        Console.WriteLine();
        Console.WriteLine(text.ToString());
        Directory.CreateDirectory(outDir);
        var file = Path.Combine(outDir, "single-caller-ratios.md");
        File.WriteAllText(file, text.ToString());
        Console.WriteLine($"Written to {file}");
        return 0;
    }

    private static BenchmarkReport? Find(Summary summary, string method) =>
        summary.Reports.FirstOrDefault(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == method);

    private static string LoadAverage()
    {
        try
        {
            return File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
        }
        catch (IOException)
        {
            return "n/a";
        }
    }

    private static string? RepoRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props")) && Directory.Exists(Path.Combine(dir.FullName, "benchmarks")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}
