using System.Diagnostics;
using System.Globalization;
using System.Text;
using InferKit.Models;
using InferKit.Selection;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.LoadTest;

/// <summary>
/// Issue 7's scenarios. A teacher MLP (256→1024→10) labels random inputs and is the `large` model; `small` is the
/// teacher with its hidden layer pruned to its largest units, so accuracy against the teacher's labels is known.
/// <list type="bullet">
/// <item><c>cascade</c>: 32 callers closed loop, peers <c>cascade</c> (small→large, threshold calibrated on a separate
/// labelled set for at most 1 point of loss) and <c>large</c>, with accuracy and early_share.</item>
/// <item><c>adaptive-ramp</c>: open loop whose rate rises from 0.5× to 3× the capacity of <c>large</c>, 50 ms deadlines:
/// peers <c>adaptive</c> (large, small) and <c>large</c>; a chart of the variant mix over time.</item>
/// </list>
/// </summary>
internal static class SelectionScenarios
{
    public const string Cascade = "cascade";
    public const string AdaptiveRamp = "adaptive-ramp";
    private const int Inputs = 4096;

    // A task where most rows are easy: hidden units of very unequal importance (a pruned student stays close to the
    // teacher) and confident logits. The defaults of MlpModel give a task too hard for any cheap student.
    private const double ImportanceSigma = 2.5;
    private const double LogitGain = 8;

    private sealed class Setup
    {
        public Setup(MlpModel teacher, int keepHidden, bool labels)
        {
            Teacher = teacher;
            Student = Teacher.Prune(keepHidden);
            TestInputs = Teacher.CreateInputs(Inputs, seed: 77);
            TestLabels = labels ? MlpModel.ArgMax(Predict(Teacher, TestInputs, Inputs), Inputs, Teacher.Classes) : [];
        }

        public MlpModel Teacher { get; }

        public MlpModel Student { get; }

        public float[] TestInputs { get; }

        public int[] TestLabels { get; }

        public int Label(int i) => TestLabels[i % Inputs];

        public float[] Row(int i) => TestInputs.AsSpan((i % Inputs) * Teacher.InputSize, Teacher.InputSize).ToArray();
    }

    /// <summary>Calibrates students of several sizes and picks the one with the lowest expected cost.</summary>
    private static (int KeepHidden, CascadeCalibrationResult Result) Calibrate(List<string> notes)
    {
        var teacher = CascadeTeacher();
        const int n = 8192;
        var validation = teacher.CreateInputs(n, seed: 5);
        var labels = MlpModel.ArgMax(Predict(teacher, validation, n), n, teacher.Classes);
        (int, CascadeCalibrationResult)? best = null;
        var lines = new List<string>();
        foreach (int keep in new[] { 64, 128, 256, 512 })
        {
            var student = teacher.Prune(keep);
            var scores = Predict(student, validation, n);
            double relativeCost = student.MultiplyAddsPerRow / (double)teacher.MultiplyAddsPerRow;
            var result = CascadeCalibration.Calibrate(scores, teacher.Classes, labels, labels, maxAccuracyLoss: 0.008,
                AcceptanceKind.TopProbability, firstStageCost: relativeCost, lastStageCost: 1);
            lines.Add(string.Create(CultureInfo.InvariantCulture,
                $"hidden {keep}: threshold {result.Threshold:F3}, early share {result.EarlyShare:P1}, accuracy {result.Accuracy:P2}, expected cost {result.CostRatio:F3}× large"));
            if (best is null || result.CostRatio < best.Value.Item2.CostRatio)
            {
                best = (keep, result);
            }
        }

        notes.Add($"Cascade task: teacher MLP 256→4096→10 with hidden-unit importance σ {ImportanceSigma} and logit gain {LogitGain}; students are the teacher pruned to its largest hidden units. " +
            "Calibration on 8192 teacher-labelled rows (max loss 0.8 points, separate from the 4096 rows the run uses): " + string.Join("; ", lines) + $"; chosen hidden {best!.Value.Item1}.");
        return best.Value;
    }

    /// <summary>The cascade's teacher: 256→4096→10, so a row's cost is compute, not scheduling overhead.</summary>
    private static MlpModel CascadeTeacher() => new(MlpModel.DefaultInputSize, 4096, MlpModel.DefaultClasses, 42, ImportanceSigma, LogitGain);

    /// <summary>Probabilities of <paramref name="model"/> for <paramref name="rows"/> rows, computed with ONNX Runtime.</summary>
    private static float[] Predict(MlpModel model, float[] inputs, int rows)
    {
        using var options = new Microsoft.ML.OnnxRuntime.SessionOptions();
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(model.ToOnnx(), options);
        using var runOptions = new Microsoft.ML.OnnxRuntime.RunOptions();
        var result = new float[rows * model.Classes];
        const int batch = 512;
        for (int start = 0; start < rows; start += batch)
        {
            int n = Math.Min(batch, rows - start);
            var slice = inputs.AsMemory(start * model.InputSize, n * model.InputSize);
            using var input = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Microsoft.ML.OnnxRuntime.OrtMemoryInfo.DefaultInstance, slice, [n, model.InputSize]);
            using var outputs = session.Run(runOptions, [MlpModel.InputName], [input], [MlpModel.ProbabilitiesName]);
            outputs[0].GetTensorDataAsSpan<float>().CopyTo(result.AsSpan(start * model.Classes));
        }

        return result;
    }

    /// <summary>A large teacher (1024→8192→10) so that its capacity is far below what the load generator can offer.</summary>
    private static MlpModel AdaptiveTeacher() => new(1024, 8192, 10, 42, ImportanceSigma, LogitGain);

    private static async Task<ServiceProvider> HostAsync(Setup setup, Action<IInferKitBuilder> more)
    {
        var services = new ServiceCollection();
        var builder = services.AddInferKit()
            .AddOnnxModel("large", ModelSource.FromBytes(setup.Teacher.ToOnnx()), o => o.Batching.MaxBatchSize = 64)
            .AddOnnxModel("small", ModelSource.FromBytes(setup.Student.ToOnnx()), o => o.Batching.MaxBatchSize = 64);
        more(builder);
        var provider = services.BuildServiceProvider();
        await provider.GetRequiredService<IModelRegistry>().LoadAllAsync();
        return provider;
    }

    public static async Task<List<PeerStats>> RunCascadeAsync(TimeSpan duration, int rounds, List<string> notes)
    {
        var (keep, calibration) = Calibrate(notes);
        var setup = new Setup(CascadeTeacher(), keep, labels: true);
        await using var provider = await HostAsync(setup, b => b.AddCascade("cascade", c => c.Then("small", calibration.ToRule(MlpModel.ProbabilitiesName)).Then("large")));
        var client = provider.GetRequiredService<IInferenceClient>();
        string[] peers = ["large", "cascade"];
        var stats = peers.ToDictionary(p => p, p => new PeerStats(Cascade, p, 32, 0));
        var counters = peers.ToDictionary(p => p, _ => new long[2]); // correct, early
        foreach (var p in peers)
        {
            await RunClosedAsync(client, setup, p, 32, TimeSpan.FromSeconds(1), new PeerStats("warmup", p, 32, 0), new long[2]);
        }

        for (int round = 1; round <= rounds; round++)
        {
            foreach (var p in peers)
            {
                using (new Progress($"[{Cascade}] {p,-28} round {round}/{rounds}", stats[p]))
                {
                    await RunClosedAsync(client, setup, p, 32, duration / rounds, stats[p], counters[p]);
                }
            }
        }

        foreach (var p in peers)
        {
            var s = stats[p];
            s.Extra["accuracy"] = s.Ok == 0 ? double.NaN : counters[p][0] / (double)s.Ok;
            s.Extra["early_share"] = s.Ok == 0 ? double.NaN : counters[p][1] / (double)s.Ok;
        }

        var ratio = stats["cascade"].ThroughputPerSecond / stats["large"].ThroughputPerSecond;
        notes.Add(string.Create(CultureInfo.InvariantCulture,
            $"cascade vs large: throughput {ratio:F2}× (goal ≥ 2×), accuracy {stats["cascade"].Extra["accuracy"]:P2} vs {stats["large"].Extra["accuracy"]:P2} (goal: loss ≤ 1 point), answered by small {stats["cascade"].Extra["early_share"]:P1} (goal ≥ 60%)."));
        return [stats["large"], stats["cascade"]];
    }

    private static async Task RunClosedAsync(IInferenceClient client, Setup setup, string model, int callers, TimeSpan duration, PeerStats stats, long[] counters)
    {
        long start = Stopwatch.GetTimestamp();
        long end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var tasks = Enumerable.Range(0, callers).Select(c => Task.Run(async () =>
        {
            int i = c;
            while (Stopwatch.GetTimestamp() < end)
            {
                int row = i;
                i += callers;
                var request = new InferenceRequest(Tensor.Create(MlpModel.InputName, setup.Row(row), 1, setup.Teacher.InputSize));
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    using var response = await client.InferAsync(model, request);
                    long t1 = Stopwatch.GetTimestamp();
                    if (!response.IsSuccess)
                    {
                        stats.Refusal(t1 - t0);
                        continue;
                    }

                    stats.Success(t1 - t0, 1, response.BatchSize);
                    var p = response[MlpModel.ProbabilitiesName].GetSpan<float>();
                    if (setup.TestLabels.Length > 0 && MlpModel.ArgMax(p, 1, setup.Teacher.Classes)[0] == setup.Label(row))
                    {
                        Interlocked.Increment(ref counters[0]);
                    }

                    if (response.Stage <= 1)
                    {
                        Interlocked.Increment(ref counters[1]);
                    }
                }
#pragma warning disable CA1031 // A load generator counts every failure and goes on.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    stats.Error(ex);
                }
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        stats.AddActive(Stopwatch.GetTimestamp() - start);
    }

    /// <summary>Per-second counts of one ramp run.</summary>
    private sealed class Timeline(int seconds)
    {
        public long[] Offered { get; } = new long[seconds];

        public long[] Large { get; } = new long[seconds];

        public long[] Small { get; } = new long[seconds];

        public long[] Missed { get; } = new long[seconds];

        public long[] Refused { get; } = new long[seconds];
    }

    public static async Task<List<PeerStats>> RunAdaptiveAsync(TimeSpan duration, string outDir, List<string> notes)
    {
        var setup = new Setup(AdaptiveTeacher(), 512, labels: false);
        notes.Add("adaptive-ramp: large = MLP 1024→8192→10, small = it pruned to 512 hidden units (about 16× cheaper).");
        await using var provider = await HostAsync(setup, b => b.AddAdaptiveModel("adaptive", a =>
        {
            a.Variants.Add("large");
            a.Variants.Add("small");
            a.DefaultBudget = TimeSpan.FromMilliseconds(50);
        }));
        var client = provider.GetRequiredService<IInferenceClient>();

        // Capacity of `large`: a closed-loop probe with enough callers to keep full batches queued.
        await RunClosedAsync(client, setup, "large", 256, TimeSpan.FromSeconds(1), new PeerStats("warmup", "large", 256, 0), new long[2]);
        var probe = new PeerStats("probe", "large", 256, 0);
        await RunClosedAsync(client, setup, "large", 256, TimeSpan.FromSeconds(3), probe, new long[2]);
        double capacity = probe.ThroughputPerSecond;
        notes.Add(string.Create(CultureInfo.InvariantCulture, $"adaptive-ramp: capacity of large (256 callers, 3 s) {capacity:N0}/s; rate rises linearly from {0.5 * capacity:N0}/s to {3 * capacity:N0}/s over {duration.TotalSeconds:F0} s; deadline 50 ms from arrival."));

        var rows = new List<PeerStats>();
        var timelines = new Dictionary<string, Timeline>();
        foreach (var peer in new[] { "large", "adaptive" })
        {
            var stats = new PeerStats(AdaptiveRamp, peer, 0, 1.75 * capacity);
            var timeline = new Timeline((int)Math.Ceiling(duration.TotalSeconds));
            using (new Progress($"[{AdaptiveRamp}] {peer,-28}", stats))
            {
                await RampAsync(client, setup, peer, capacity, duration, stats, timeline);
            }

            long offered = timeline.Offered.Sum();
            long bad = timeline.Missed.Sum() + timeline.Refused.Sum();
            stats.Extra["offered"] = offered;
            stats.Extra["missed_or_refused_share"] = offered == 0 ? double.NaN : bad / (double)offered;
            stats.Extra["small_share"] = stats.Ok == 0 ? 0 : timeline.Small.Sum() / (double)stats.Ok;
            long beyond = 0;
            long beyondBad = 0;
            for (int s = 0; s < timeline.Offered.Length; s++)
            {
                double rateAt = capacity * (0.5 + (2.5 * (s + 0.5) / timeline.Offered.Length));
                if (rateAt > capacity)
                {
                    beyond += timeline.Offered[s];
                    beyondBad += timeline.Missed[s] + timeline.Refused[s];
                }
            }

            stats.Extra["missed_or_refused_beyond_capacity"] = beyond == 0 ? double.NaN : beyondBad / (double)beyond;
            notes.Add(string.Create(CultureInfo.InvariantCulture,
                $"adaptive-ramp {peer}: {offered} offered, missed or refused {bad} ({stats.Extra["missed_or_refused_share"]:P2}; beyond capacity {stats.Extra["missed_or_refused_beyond_capacity"]:P1}), answered by small {stats.Extra["small_share"]:P1}."));
            rows.Add(stats);
            timelines[peer] = timeline;
        }

        Directory.CreateDirectory(outDir);
        var csv = new StringBuilder("second,offered_rate,peer,large,small,missed,refused\n");
        foreach (var (peer, t) in timelines)
        {
            for (int s = 0; s < t.Offered.Length; s++)
            {
                csv.Append(CultureInfo.InvariantCulture, $"{s},{t.Offered[s]},{peer},{t.Large[s]},{t.Small[s]},{t.Missed[s]},{t.Refused[s]}\n");
            }
        }

        await File.WriteAllTextAsync(Path.Combine(outDir, "adaptive-ramp.csv"), csv.ToString());
        try
        {
            Chart(timelines["adaptive"], timelines["large"], Path.Combine(outDir, "adaptive-ramp.png"));
            notes.Add($"Variant mix over time: {Path.Combine(outDir, "adaptive-ramp.png")} (data: adaptive-ramp.csv).");
        }
        catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException or InvalidOperationException)
        {
            notes.Add($"Variant-mix chart not written: {ex.Message}");
        }

        return rows;
    }

    private static async Task RampAsync(IInferenceClient client, Setup setup, string model, double capacity, TimeSpan duration, PeerStats stats, Timeline timeline)
    {
        var deadline = TimeSpan.FromMilliseconds(50);
        long deadlineTicks = (long)(deadline.TotalSeconds * Stopwatch.Frequency);
        var random = new Random(11);
        long start = Stopwatch.GetTimestamp();
        double total = duration.TotalSeconds;
        double next = 0;
        int outstanding = 0;
        int id = 0;
        while (next < total)
        {
            double elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (elapsed < next)
            {
                Thread.Sleep(TimeSpan.FromSeconds(Math.Min(0.001, next - elapsed)));
                continue;
            }

            long arrival = start + (long)(next * Stopwatch.Frequency);
            int second = Math.Min(timeline.Offered.Length - 1, (int)next);
            Interlocked.Increment(ref timeline.Offered[second]);
            int row = id++;
            Interlocked.Increment(ref outstanding);
            ThreadPool.UnsafeQueueUserWorkItem(_ => _ = CallAsync(row, arrival, second), null);
            double rate = capacity * (0.5 + (2.5 * next / total));
            next += -Math.Log(1 - random.NextDouble()) / rate;
        }

        while (Volatile.Read(ref outstanding) > 0)
        {
            await Task.Delay(10);
        }

        stats.AddActive(Stopwatch.GetTimestamp() - start);

        async Task CallAsync(int row, long arrival, int second)
        {
            try
            {
                long now = Stopwatch.GetTimestamp();
                var remaining = TimeSpan.FromSeconds((arrival + deadlineTicks - now) / (double)Stopwatch.Frequency);
                var request = new InferenceRequest(Tensor.Create(MlpModel.InputName, setup.Row(row), 1, setup.Teacher.InputSize))
                {
                    Timeout = remaining > TimeSpan.Zero ? remaining : TimeSpan.FromTicks(1),
                };
                using var response = await client.InferAsync(model, request);
                long done = Stopwatch.GetTimestamp();
                if (response.Status == InferenceStatus.Refused)
                {
                    stats.Refusal(done - now);
                    Interlocked.Increment(ref timeline.Refused[second]);
                }
                else if (response.Status == InferenceStatus.DeadlineExceeded || done - arrival > deadlineTicks)
                {
                    stats.Expiry();
                    Interlocked.Increment(ref timeline.Missed[second]);
                }
                else
                {
                    stats.Success(done - arrival, 1, response.BatchSize);
                    Interlocked.Increment(ref (response.AnsweredBy == "small" ? ref timeline.Small[second] : ref timeline.Large[second]));
                }
            }
#pragma warning disable CA1031 // A load generator counts every failure and goes on.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                stats.Error(ex);
                Interlocked.Increment(ref timeline.Missed[second]);
            }
            finally
            {
                Interlocked.Decrement(ref outstanding);
            }
        }
    }

    private static void Chart(Timeline adaptive, Timeline large, string path)
    {
        var plot = new ScottPlot.Plot();
        double[] xs = Enumerable.Range(0, adaptive.Offered.Length).Select(static s => s + 0.5).ToArray();
        void Line(long[] values, string label, ScottPlot.Color color, bool dashed = false)
        {
            var line = plot.Add.Scatter(xs, values.Select(static v => (double)v).ToArray(), color);
            line.LegendText = label;
            line.LineWidth = 2;
            line.MarkerSize = 0;
            if (dashed)
            {
                line.LinePattern = ScottPlot.LinePattern.Dashed;
            }
        }

        var palette = new ScottPlot.Palettes.Category10();
        Line(adaptive.Offered, "offered (per s)", ScottPlot.Colors.Black, dashed: true);
        Line(adaptive.Large, "adaptive: answered by large", palette.GetColor(0));
        Line(adaptive.Small, "adaptive: answered by small", palette.GetColor(1));
        Line(adaptive.Missed.Zip(adaptive.Refused, static (a, b) => a + b).ToArray(), "adaptive: missed or refused", palette.GetColor(3));
        Line(large.Missed.Zip(large.Refused, static (a, b) => a + b).ToArray(), "large alone: missed or refused", palette.GetColor(3), dashed: true);
        Line(large.Large, "large alone: answered in time", palette.GetColor(0), dashed: true);
        plot.Title("Adaptive selection under a rising load (0.5× to 3× the capacity of large, 50 ms deadline)");
        plot.XLabel("time (s)");
        plot.YLabel("requests per second");
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SavePng(path, 1200, 750);
    }
}
