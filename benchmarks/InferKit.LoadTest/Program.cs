using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using InferKit.LoadBalancing;
using Microsoft.Extensions.DependencyInjection;

namespace InferKit.LoadTest;

/// <summary>
/// The InferKit load generator. With no scenario argument it runs the standard suite: 1 and 64 callers closed loop
/// (ceiling, naive, inferkit), the open-loop overload at twice InferKit's measured capacity with a 50 ms deadline
/// (inferkit, naive), and 4 instances with one 5× slower, 32 callers, one row per load-balancing strategy beside
/// 4 healthy instances. Closed-loop peers run interleaved in rounds so drifting background load hits them alike.
/// </summary>
internal static class Program
{
    private static readonly string[] AllScenarios = [Report.Closed1, Report.Closed64, Report.Open2x, Report.SlowInstance, SelectionScenarios.Cascade, SelectionScenarios.AdaptiveRamp];

    /// <summary>
    /// Synchronous on purpose: the runs block the calling thread while they wait, and that thread must be the main
    /// thread, not a thread-pool worker that InferKit's continuations need.
    /// </summary>
    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        Cli cli;
        try
        {
            cli = Cli.Parse(args);
        }
        catch (ArgumentException ex)
        {
            Console.Error.WriteLine(ex.Message);
            Console.Error.WriteLine(Cli.Usage);
            return 2;
        }

        if (cli.Help)
        {
            Console.WriteLine(Cli.Usage);
            return 0;
        }

        var scenarios = cli.Scenarios.Count == 0 ? AllScenarios.ToList() : cli.Scenarios;
        foreach (var s in scenarios)
        {
            if (!AllScenarios.Contains(s))
            {
                Console.Error.WriteLine($"Unknown scenario '{s}'. Known scenarios: {string.Join(", ", AllScenarios)}.");
                return 2;
            }
        }

        var suiteStart = Stopwatch.GetTimestamp();
        string header = $"# InferKit load test — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, {RuntimeInformationText()}, " +
            $"{cli.Duration.TotalSeconds:F0} s per peer per scenario in {cli.Rounds} interleaved rounds, load average at start {LoadAverage()}";
        Console.WriteLine(header);
        Console.WriteLine($"Scenarios: {string.Join(", ", scenarios)}. Output: {cli.OutDir}");

        if (cli.MinThreads is int minThreads)
        {
            ThreadPool.SetMinThreads(minThreads, minThreads);
        }

        Console.WriteLine(cli.InferKitSettings);
        using var workload = new Workload(cli.NoSpin);
        var rows = new List<PeerStats>();
        var notes = new List<string>();
        using var ceiling = new CeilingPeer(workload);

        if (scenarios.Contains(Report.Closed64) && cli.Runs("ceiling"))
        {
            Console.WriteLine("Calibrating the ceiling (raw ONNX Runtime, batch sizes 1..256; one caller on one session, and one caller per core each on its own single-threaded session)...");
            ceiling.Calibrate([1, 4, 16, 32, 64, 128, 256], TimeSpan.FromMilliseconds(500));
            var table = string.Join("; ", ceiling.Calibration.GroupBy(kv => kv.Key.Threads).Select(g =>
                (g.Key == 1 ? "1 caller, default intra-op threads: " : $"{g.Key} callers, a 1-thread session each: ")
                + string.Join(", ", g.Select(kv => $"{kv.Key.Size}: {kv.Value:N0} rows/s"))));
            string chosen = $"best {ceiling.Threads} caller(s) at batch {ceiling.BatchSize}";
            Console.WriteLine($"  {table}; {chosen}");
            notes.Add($"Ceiling calibration (rows/s by batch size): {table}; {chosen}.");
        }

        foreach (var scenario in scenarios)
        {
            string loadBefore = LoadAverage();
            var cpuBefore = CpuTimes.Read();
            var scenarioStart = Stopwatch.GetTimestamp();
            Console.WriteLine();
            Console.WriteLine($"== {scenario} (load average {loadBefore})");
            switch (scenario)
            {
                case Report.Closed1:
                {
                    using var inferkit = InferKitPeer.CreateOnnxAsync("inferkit", workload, cli.Configure).GetAwaiter().GetResult();
                    inferkit.SynchronousContinuations = cli.IkSyncContinuations;
                    rows.AddRange(RunClosed(scenario, 1, cli, [new NaivePeer(workload), inferkit]));
                    break;
                }

                case Report.Closed64:
                {
                    using var inferkit = InferKitPeer.CreateOnnxAsync("inferkit", workload, cli.Configure).GetAwaiter().GetResult();
                    inferkit.SynchronousContinuations = cli.IkSyncContinuations;
                    // ceiling-64: raw ONNX Runtime at batch 64, the largest batch 64 closed-loop callers can fill (context
                    // for the ceiling goal, which compares with the best batch size at any size).
                    using var ceiling64 = new CeilingPeer(workload, fixedBatch: 64, threads: ceiling.Threads);
                    rows.AddRange(RunClosed(scenario, 64, cli, [ceiling, ceiling64, new NaivePeer(workload), inferkit]));
                    break;
                }

                case Report.Open2x:
                {
                    using var inferkit = InferKitPeer.CreateOnnxAsync("inferkit", workload, cli.ConfigureOpenLoop).GetAwaiter().GetResult();
                    inferkit.SynchronousContinuations = cli.IkSyncContinuations;
                    rows.AddRange(RunOpen(scenario, cli, workload, inferkit, notes));
                    break;
                }

                case Report.SlowInstance:
                    rows.AddRange(RunSlowInstance(cli, workload, notes));
                    break;

                case SelectionScenarios.Cascade:
                    rows.AddRange(SelectionScenarios.RunCascadeAsync(cli.Duration, cli.Rounds, notes).GetAwaiter().GetResult());
                    break;

                case SelectionScenarios.AdaptiveRamp:
                    rows.AddRange(SelectionScenarios.RunAdaptiveAsync(cli.Duration * 2, cli.OutDir, notes).GetAwaiter().GetResult());
                    break;
            }

            foreach (var row in rows.Where(r => r.Scenario == scenario && r.Peer is "naive" or "inferkit"))
            {
                if (GcWindow.Describe(row) is { } gc)
                {
                    notes.Add($"{scenario} {row.Peer}: {gc} (whole process, the callers' own objects included).");
                }
            }

            notes.Add($"{scenario}: load average {loadBefore} before, {LoadAverage()} after; took {Stopwatch.GetElapsedTime(scenarioStart).TotalSeconds:F0} s; {CpuTimes.StolenText(cpuBefore, CpuTimes.Read())}.");
        }

        notes.Add(cli.InferKitSettings + ".");
        notes.Add($"Whole run: {Stopwatch.GetElapsedTime(suiteStart).TotalSeconds:F0} s.");
        Directory.CreateDirectory(cli.OutDir);
        var markdown = Report.Markdown(rows, notes, header);
        Console.WriteLine();
        Console.WriteLine(markdown);
        var mdPath = Path.Combine(cli.OutDir, "loadtest.md");
        File.WriteAllText(mdPath, markdown);
        Console.WriteLine($"Table: {mdPath}");
        var pngPath = Path.Combine(cli.OutDir, "loadtest.png");
        try
        {
            Report.Chart(rows, pngPath, $"InferKit load test: throughput vs p99 (MLP 256-1024-10, {Environment.ProcessorCount} cores)");
            Console.WriteLine($"Chart: {pngPath}");
        }
        catch (Exception ex) when (ex is TypeInitializationException or DllNotFoundException or InvalidOperationException)
        {
            Console.Error.WriteLine($"Chart not written ({ex.GetType().Name}: {ex.Message}). ScottPlot needs SkiaSharp's native library (SkiaSharp.NativeAssets.Linux.NoDependencies, restored with ScottPlot) and a font (fonts-dejavu-core on Debian).");
        }

        if (cli.JsonPath is not null)
        {
            var dir = Path.GetDirectoryName(Path.GetFullPath(cli.JsonPath));
            if (dir is not null)
            {
                Directory.CreateDirectory(dir);
            }

            File.WriteAllText(cli.JsonPath, Report.Json(rows));
            Console.WriteLine($"JSON: {cli.JsonPath}");
        }

        return rows.Any(r => r.WrongOutputs > 0) ? 1 : 0;
    }

    /// <summary>Runs closed-loop peers in interleaved rounds after a short unrecorded warm-up of each.</summary>
    private static List<PeerStats> RunClosed(string scenario, int callers, Cli cli, IClosedLoopPeer[] peers)
    {
        if (scenario != Report.SlowInstance)
        {
            peers = peers.Where(p => cli.Runs(p.Name)).ToArray();
        }

        var stats = peers.Select(p => new PeerStats(scenario, p.Name, callers, 0)).ToList();
        var warmup = TimeSpan.FromSeconds(Math.Min(1, cli.Duration.TotalSeconds / 4));
        for (int i = 0; i < peers.Length; i++)
        {
            peers[i].Run(callers, warmup, new PeerStats("warmup", stats[i].Peer, callers, 0));
        }

        var slice = cli.Duration / cli.Rounds;
        for (int round = 1; round <= cli.Rounds; round++)
        {
            for (int i = 0; i < peers.Length; i++)
            {
                using (new Progress($"[{scenario}] {stats[i].Peer,-28} round {round}/{cli.Rounds}", stats[i]))
                using (new GcWindow(stats[i]))
                {
                    peers[i].Run(callers, slice, stats[i]);
                }
            }
        }

        for (int i = 0; i < peers.Length; i++)
        {
            if (peers[i] is InferKitPeer { Stalled: true })
            {
                stats[i].Note = "STALLED: callers went unanswered; see first_error";
            }
        }

        return stats;
    }

    /// <summary>
    /// The open loop in paired rounds, so that a change in the machine's speed during the run moves the capacity and
    /// the goodput together: each round first measures InferKit's capacity (a short closed loop with 64 callers), then
    /// runs both peers in the open loop at twice that capacity (or <c>--rate</c>), InferKit's run bracketed by a second
    /// probe right after it. A round's ratio is InferKit's goodput over the mean of its two probes, so that a drift in
    /// the machine's speed during the round moves both sides alike; the goodput goal is the median of the rounds'
    /// ratios. Memory is measured before the first and after the last open-loop round.
    /// </summary>
    private static List<PeerStats> RunOpen(string scenario, Cli cli, Workload workload, InferKitPeer inferkit, List<string> notes)
    {
        using var inferkitLoop = new InferKitOpenLoop(inferkit, cli.Arrivals);
        IOpenLoopPeer[] peers = [.. new IOpenLoopPeer[] { inferkitLoop, new NaiveOpenLoop(workload) }.Where(p => cli.Runs(p.Name))];
        var stats = peers.ToDictionary(p => p.Name, p => new PeerStats(scenario, p.Name, 0, 0));
        int rounds = Math.Max(1, cli.Rounds);
        var slice = cli.Duration / rounds;
        var probeTime = TimeSpan.FromSeconds(Math.Clamp(slice.TotalSeconds / 2, 1, 3));
        inferkit.Run(64, TimeSpan.FromSeconds(1), new PeerStats("warmup", "inferkit", 64, 0));
        double Probe()
        {
            var probe = new PeerStats("capacity", "inferkit", 64, 0);
            using (new Progress("[capacity probe] inferkit, 64 callers", probe))
            {
                inferkit.Run(64, probeTime, probe);
            }

            return probe.ThroughputPerSecond;
        }

        // Warm-up at the first probe's rate; the generator's per-arrival objects are pooled and grow with the arrivals
        // waiting in the thread pool: create enough for 100 ms of arrivals up front so that the heap measured is the
        // peer's, not the generator's backlog.
        double firstRate = cli.Rate ?? (2 * Probe());
        foreach (var peer in peers)
        {
            var warm = new OpenLoopContext(new PeerStats("warmup", peer.Name, 0, firstRate), workload, cli.Deadline);
            OpenLoop.Run(peer, firstRate, TimeSpan.FromSeconds(Math.Min(2, cli.Duration.TotalSeconds / 4)), warm, seed: 1, measureBefore: false, measureAfter: false, cli.Generators);
            peer.Reserve((int)Math.Min(firstRate * 0.1, 200_000));
        }

        var callsBefore = peers.ToDictionary(p => p.Name, p => p.CallsCreated);
        var ratios = new List<double>();
        var capacities = new List<double>();
        var brackets = new List<string>();
        var rates = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            double before = Probe();
            double rate = cli.Rate ?? (2 * before);
            rates.Add(rate);
            foreach (var peer in peers)
            {
                var s = stats[peer.Name];
                long inDeadline = s.InDeadline;
                double seconds = s.Seconds;
                var context = new OpenLoopContext(s, workload, cli.Deadline);
                var batchesBefore = inferkit.BatchCounters;
                using (new Progress($"[{scenario} {round + 1}/{rounds}] {peer.Name,-20} {rate:N0}/s, deadline {cli.Deadline.TotalMilliseconds:F0} ms", s))
                {
                    OpenLoop.Run(peer, rate, slice, context, seed: 2 + round, measureBefore: round == 0, measureAfter: round == rounds - 1, cli.Generators);
                }

                if (peer is InferKitOpenLoop)
                {
                    // Only this round's batches: the capacity probes run on the same peer in between.
                    inferkit.AddBatchStats(s, batchesBefore);
                    double after = Probe();
                    double capacity = (before + after) / 2;
                    capacities.Add(capacity);
                    brackets.Add(Inv($"{before:N0}/{after:N0}"));
                    ratios.Add((s.InDeadline - inDeadline) / (s.Seconds - seconds) / capacity);
                }
            }
        }

        var rows = new List<PeerStats>();
        foreach (var peer in peers)
        {
            var s = stats[peer.Name];
            s.Rate = rates.Average();
            if (peer is InferKitOpenLoop)
            {
                ratios.Sort();
                s.Extra["goodput_ratio"] = ratios[ratios.Count / 2];
                for (int i = 0; i < capacities.Count; i++)
                {
                    s.Extra[$"round{i + 1}_capacity_per_s"] = capacities[i];
                }
            }

            s.GoodputPerSecond = s.InDeadline / s.Seconds;
            s.Extra["generator_calls_created"] = peer.CallsCreated - callsBefore[peer.Name];
            s.Extra["capacity_per_s"] = capacities.Count > 0 ? capacities.Average() : rates.Average() / 2;
            s.Extra["arrivals"] = s.Ok + s.Refused + s.Expired + s.Errors;
            s.Extra["overloaded"] = s.Refused + s.Expired > 0.01 * s.Extra["arrivals"] ? 1 : 0;
            s.Extra["offered_per_s"] = s.Extra.GetValueOrDefault("generation_s") > 0 ? s.Extra["fired"] / s.Extra["generation_s"] : double.NaN;
            notes.Add(Inv($"open-2x {peer.Name}: offered {s.Extra["offered_per_s"]:N0} arrivals/s against the {s.Rate:N0}/s asked for ({s.Extra["offered_per_s"] / s.Extra["capacity_per_s"]:F2}× the measured capacity); the generator's lag behind its schedule, p99 {s.GeneratorLag.PercentileMs(0.99):F1} ms."));
            rows.Add(s);
        }

        notes.Add(Inv($"open-2x: {cli.ArrivalsText}; {cli.Generators} generator thread(s), each a Poisson stream at 1/{cli.Generators} of the rate."));
        notes.Add(Inv($"open-2x in {rounds} paired rounds; capacity probes ({probeTime.TotalSeconds:F1} s closed loop, 64 callers) before/after InferKit's open loop, by round: {string.Join(", ", brackets)}/s; InferKit goodput/capacity by round {string.Join(", ", ratios.Select(r => r.ToString("P0", CultureInfo.InvariantCulture)))} (sorted)."));
        return rows;
    }

    /// <summary>
    /// 4 instances of the model, each its own single-threaded session behind a custom backend; instance 0 is 5× slower.
    /// One row per strategy name the library declares (unknown to this build: skipped with a note), beside 4 healthy instances.
    /// </summary>
    private static List<PeerStats> RunSlowInstance(Cli cli, Workload workload, List<string> notes)
    {
        const int Instances = 4;
        const int Callers = 32;
        const double Slowdown = 5;
        var names = typeof(LoadBalancingStrategies).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.IsLiteral && f.FieldType == typeof(string))
            .Select(f => (string)f.GetRawConstantValue()!)
            .ToList();
        var peers = new List<InferKitPeer>();
        var backends = new Dictionary<string, ConcurrentBag<(int Index, TimedOnnxBackend Backend)>>();
        try
        {
            InferKitPeer? Create(string peerName, string strategy, double slowdown)
            {
                var created = new ConcurrentBag<(int, TimedOnnxBackend)>();
                try
                {
                    var peer = InferKitPeer.CreateAsync(peerName, workload, b => b.AddModel(Workload.ModelName,
                        ctx =>
                        {
                            var backend = new TimedOnnxBackend(workload.CreateSession(intraOpThreads: 1), ctx.InstanceIndex == 0 ? slowdown : 1);
                            created.Add((ctx.InstanceIndex, backend));
                            return backend;
                        },
                        o =>
                        {
                            o.Instances = Instances;
                            o.LoadBalancing = strategy;
                            o.Batching.MaxBatchSize = 64;
                        })).GetAwaiter().GetResult();
                    backends[peerName] = created;
                    return peer;
                }
#pragma warning disable CA1031 // Strategies this build does not know are skipped, whatever start-up throws.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    var message = ex.Message.Split('\n')[0];
                    notes.Add($"{Report.SlowInstance}: strategy '{strategy}' skipped — start-up refused it ({ex.GetType().Name}: {message})");
                    Console.WriteLine($"  {strategy}: skipped ({ex.GetType().Name}: {message})");
                    return null;
                }
            }

            if (Create(Report.HealthyPeer, LoadBalancingStrategies.LeastConnections, 1) is { } healthy)
            {
                peers.Add(healthy);
            }

            foreach (var name in names)
            {
                if (Create(name, name, Slowdown) is { } peer)
                {
                    peers.Add(peer);
                }
            }

            var rows = RunClosed(Report.SlowInstance, Callers, cli, peers.ToArray());
            foreach (var row in rows)
            {
                var list = backends[row.Peer].OrderBy(b => b.Index).Select(b => b.Backend).ToArray();
                long totalRows = list.Sum(b => b.Rows);
                row.Extra["slow_instance_row_share"] = totalRows == 0 ? double.NaN : list[0].Rows / (double)totalRows;
                row.Extra["slow_instance_effective_slowdown"] = list[0].EffectiveSlowdown;
                row.Extra["instances"] = Instances;
                row.Note = row.Peer == Report.HealthyPeer ? "4 healthy instances, LeastConnections" : $"instance 0 {Slowdown}× slower";
            }

            notes.Add($"{Report.SlowInstance}: 4 instances (one ONNX session each, 1 intra-op thread), {Callers} callers, MaxBatchSize 64; instance 0 sleeps (f-1)× its compute time after each run. " +
                string.Join("; ", rows.Select(r => Inv($"{r.Peer}: slow instance took {r.Extra["slow_instance_row_share"]:P1} of rows, effective slowdown {r.Extra["slow_instance_effective_slowdown"]:F2}×"))) + ".");
            return rows;
        }
        finally
        {
            foreach (var p in peers)
            {
                p.Dispose();
            }
        }
    }

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    internal static string LoadAverage()
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

    private static string RuntimeInformationText() =>
        $".NET {Environment.Version}, ONNX Runtime {typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly.GetName().Version}";
}

/// <summary>Command-line options.</summary>
internal sealed class Cli
{
    public const string Usage = """
        Usage: InferKit.LoadTest [options]
          --duration SECONDS   measured time per peer per scenario (default 10), split over the rounds
          --scenario NAME      run only this scenario (repeatable, or comma-separated): closed-1, closed-64, open-2x, slow-instance, cascade, adaptive-ramp
          --json PATH          also write the rows as a JSON array
          --out DIR            where loadtest.md and loadtest.png go (default benchmarks/results/loadtest)
          --peers LIST         only these peers (comma-separated: ceiling, naive, inferkit; slow-instance rows always run)
          --rounds N           interleaved rounds for closed-loop peers (default 3)
          --rate R             open-loop arrival rate per second (default: 2 x inferkit's measured 64-caller capacity)
          --deadline-ms MS     open-loop deadline per request (default 50)
          --generators N       open-loop generator threads, each a Poisson stream at 1/N of the rate (default: one
                               per logical processor, up to 4)
          --arrivals MODE      how the open-loop generator starts an InferKit arrival: direct (default: its own
                               thread calls InferAsync and goes on) or pool (a thread-pool work item per arrival).
                               The naive peer blocks in session.Run, so its arrivals are always pool work items
        InferKit peer settings (closed-1, closed-64, open-2x), for experiments:
          --ik-instances N     instances (default 1)
          --ik-intra-op N      ONNX Runtime intra-op threads per instance (default: ONNX Runtime's default)
          --ik-max-batch N     Batching.MaxBatchSize (default 64)
          --ik-concurrency N   MaxConcurrencyPerInstance: batches one instance may run at once (default 1; an
                               instance with lanes runs at least as many)
          --ik-lanes N         OnnxSessionSettings.Lanes: single-threaded lanes per instance (default: the
                               library's, one per core up to 4 when intra-op threads are not set)
          --ik-no-inline       Batching.AllowInlineExecution = false
          --ik-max-queue N     Batching.MaxQueueLength (default: the library's, 4096)
          --ik-async-continuations
                               callers' continuations go through the thread pool (default: they run on the thread
                               that finished the batch, InferenceRequest.AllowSynchronousContinuation, as the
                               protocol endpoint's do)
          --ik-delay-us US     Batching.MaxQueueDelay in microseconds (default 0)
          --ik-config KEY=VALUE an ONNX Runtime session config entry for the InferKit peer (repeatable)
          --no-spin            session.intra_op.allow_spinning = 0 on every session (all peers)
          --min-threads N      ThreadPool.SetMinThreads(N, N) before the run (default: .NET's default)
        """;

    public TimeSpan Duration { get; private set; } = TimeSpan.FromSeconds(10);

    public List<string> Scenarios { get; } = new();

    public string? JsonPath { get; private set; }

    public string OutDir { get; private set; } = DefaultOut();

    public int Rounds { get; private set; } = 3;

    public double? Rate { get; private set; }

    public TimeSpan Deadline { get; private set; } = TimeSpan.FromMilliseconds(50);

    public bool Help { get; private set; }

    /// <summary>Peers to run (null: all).</summary>
    public HashSet<string>? Peers { get; private set; }

    public bool Runs(string peer) => Peers is null || Peers.Contains(peer);

    public int IkInstances { get; private set; } = 1;

    public int? IkIntraOp { get; private set; }

    public int IkMaxBatch { get; private set; } = 64;

    public int IkConcurrency { get; private set; } = 1;

    public int? IkLanes { get; private set; }

    public bool IkInline { get; private set; } = true;

    public int? IkMaxQueue { get; private set; }

    public bool IkSyncContinuations { get; private set; } = true;

    public TimeSpan IkDelay { get; private set; }

    public bool NoSpin { get; private set; }

    public Dictionary<string, string> IkConfig { get; } = new(StringComparer.Ordinal);

    public int? MinThreads { get; private set; }

    /// <summary>How the open-loop generator starts InferKit's arrivals.</summary>
    public Arrivals Arrivals { get; private set; } = Arrivals.Direct;

    /// <summary>
    /// Open-loop generator threads, each firing a Poisson stream at the rate divided among them. Default: one per logical
    /// processor, up to 4; on 2 cores one thread fell behind the 2× rate (it reached 1.1–1.4× the capacity).
    /// </summary>
    public int Generators { get; private set; } = Math.Clamp(Environment.ProcessorCount, 1, 4);

    /// <summary>The arrival mode, for the report.</summary>
    public string ArrivalsText => Arrivals == Arrivals.Direct
        ? "InferKit's arrivals are started by the generator's own thread (--arrivals direct), so its inline fast path is off (--ik-no-inline): one thread calling InferAsync back to back is a lone caller, and would run every request itself; the naive peer's arrivals are pool work items"
        : "every arrival is a thread-pool work item of its own (--arrivals pool)";

    /// <summary>
    /// <see cref="Configure"/> for the open loop. With direct arrivals the generator's thread is InferKit's only caller: it
    /// would take the lone-caller fast path (run the request on its own thread) and stop generating while the model runs,
    /// which turns the open loop into a closed loop of one. Arrivals from many threads never take that path under load.
    /// </summary>
    public void ConfigureOpenLoop(InferKit.Models.ModelOptions o)
    {
        Configure(o);
        if (Arrivals == Arrivals.Direct)
        {
            o.Batching.AllowInlineExecution = false;
        }
    }

    /// <summary>Applies the InferKit peer settings to a model.</summary>
    public void Configure(InferKit.Models.ModelOptions o)
    {
        o.Instances = IkInstances;
        o.Onnx.IntraOpThreads = IkIntraOp;
        o.Batching.MaxBatchSize = IkMaxBatch;
        o.MaxConcurrencyPerInstance = IkConcurrency;
        o.Onnx.Lanes = IkLanes;
        o.Batching.AllowInlineExecution = IkInline;
        if (IkMaxQueue is int queue)
        {
            o.Batching.MaxQueueLength = queue;
        }

        o.Batching.MaxQueueDelay = IkDelay;
        if (NoSpin)
        {
            o.Onnx.ConfigEntries["session.intra_op.allow_spinning"] = "0";
        }

        foreach (var (key, value) in IkConfig)
        {
            o.Onnx.ConfigEntries[key] = value;
        }
    }

    /// <summary>A description of the non-default InferKit settings, for the report.</summary>
    public string InferKitSettings =>
        $"inferkit: {IkInstances} instance(s) × {IkConcurrency} concurrent batch(es) or its lanes ({IkLanes?.ToString(CultureInfo.InvariantCulture) ?? "library default"}) if more, intra-op threads {IkIntraOp?.ToString(CultureInfo.InvariantCulture) ?? "default"}, MaxBatchSize {IkMaxBatch}, " +
        $"inline {(IkInline ? "on" : "off")}, callers' continuations {(IkSyncContinuations ? "synchronous" : "through the thread pool")}, MaxQueueDelay {IkDelay.TotalMilliseconds * 1000:F0} µs, ONNX Runtime spinning {(NoSpin ? "off" : "default (on)")}, " +
        $"thread-pool min threads {(MinThreads?.ToString(CultureInfo.InvariantCulture) ?? "default")}" +
        (IkMaxQueue is int queue ? $", MaxQueueLength {queue.ToString(CultureInfo.InvariantCulture)}" : string.Empty) +
        (IkConfig.Count == 0 ? string.Empty : $", session config {string.Join(", ", IkConfig.Select(kv => $"{kv.Key}={kv.Value}"))}");

    public static Cli Parse(string[] args)
    {
        var cli = new Cli();
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            double Number(string name, double min)
            {
                var text = Value();
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= min
                    ? v
                    : throw new ArgumentException($"{name} must be a number ≥ {min}; got '{text}'.");
            }

            switch (args[i])
            {
                case "--duration":
                    cli.Duration = TimeSpan.FromSeconds(Number("--duration", 0.5));
                    break;
                case "--scenario":
                    cli.Scenarios.AddRange(Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
                    break;
                case "--json":
                    cli.JsonPath = Value();
                    break;
                case "--out":
                    cli.OutDir = Value();
                    break;
                case "--peers":
                    cli.Peers = Value().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.OrdinalIgnoreCase);
                    break;
                case "--rounds":
                    cli.Rounds = (int)Number("--rounds", 1);
                    break;
                case "--rate":
                    cli.Rate = Number("--rate", 1);
                    break;
                case "--deadline-ms":
                    cli.Deadline = TimeSpan.FromMilliseconds(Number("--deadline-ms", 1));
                    break;
                case "--generators":
                    cli.Generators = (int)Number("--generators", 1);
                    break;
                case "--arrivals":
                {
                    var mode = Value();
                    cli.Arrivals = mode.ToLowerInvariant() switch
                    {
                        "direct" => Arrivals.Direct,
                        "pool" => Arrivals.Pool,
                        _ => throw new ArgumentException($"--arrivals takes direct or pool; got '{mode}'."),
                    };
                    break;
                }

                case "--ik-instances":
                    cli.IkInstances = (int)Number("--ik-instances", 1);
                    break;
                case "--ik-intra-op":
                    cli.IkIntraOp = (int)Number("--ik-intra-op", 1);
                    break;
                case "--ik-concurrency":
                    cli.IkConcurrency = (int)Number("--ik-concurrency", 1);
                    break;
                case "--ik-lanes":
                    cli.IkLanes = (int)Number("--ik-lanes", 1);
                    break;
                case "--ik-max-batch":
                    cli.IkMaxBatch = (int)Number("--ik-max-batch", 1);
                    break;
                case "--ik-no-inline":
                    cli.IkInline = false;
                    break;
                case "--ik-max-queue":
                    cli.IkMaxQueue = (int)Number("--ik-max-queue", 1);
                    break;
                case "--ik-async-continuations":
                    cli.IkSyncContinuations = false;
                    break;
                case "--ik-delay-us":
                    cli.IkDelay = TimeSpan.FromMilliseconds(Number("--ik-delay-us", 0) / 1000);
                    break;
                case "--min-threads":
                    cli.MinThreads = (int)Number("--min-threads", 1);
                    break;
                case "--ik-config":
                {
                    var entry = Value();
                    int eq = entry.IndexOf('=', StringComparison.Ordinal);
                    if (eq <= 0)
                    {
                        throw new ArgumentException($"--ik-config takes KEY=VALUE; got '{entry}'.");
                    }

                    cli.IkConfig[entry[..eq]] = entry[(eq + 1)..];
                    break;
                }

                case "--no-spin":
                    cli.NoSpin = true;
                    break;
                case "-h" or "--help":
                    cli.Help = true;
                    break;
                default:
                    throw new ArgumentException($"Unknown argument '{args[i]}'.");
            }
        }

        return cli;
    }

    private static string DefaultOut()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Directory.Build.props")) && Directory.Exists(Path.Combine(dir.FullName, "benchmarks")))
            {
                return Path.Combine(dir.FullName, "benchmarks", "results", "loadtest");
            }
        }

        return Path.Combine(Directory.GetCurrentDirectory(), "loadtest-results");
    }
}
