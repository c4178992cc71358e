using InferKit.Selection;
using InferKit.Telemetry;
using InferKit.Tests.Fakes;
using InferKit.Tests.Telemetry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// Refusal and expiry messages reach HTTP clients and logs: their numbers are written the same way whatever the culture
/// of the thread that builds or reads them (de-DE writes 1.5 as "1,5").
/// </summary>
public sealed class InvariantMessageTests
{
    [Fact]
    public async Task A_deadline_refused_at_admission_writes_its_numbers_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        // Runs take 10 ms of fake time (warm-up measures it); five requests queue ahead of one allowing 20 ms.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 1, computeTime: _ => TimeSpan.FromMilliseconds(10));
        var first = await h.OccupyAsync(100);
        var ahead = Enumerable.Range(1, 5).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        try
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(9, timeout: TimeSpan.FromMilliseconds(20)));
            Assert.Equal(RefusalReason.DeadlineInfeasible, r.RefusalReason);
            Assert.Matches(@"the deadline \(\d+\.\d ms away\) cannot be met; the queue ahead needs about \d+\.\d ms\.$", r.Message);
        }
        finally
        {
            h.Backend.Release();
        }

        foreach (var t in ahead.Append(first))
        {
            (await t).Dispose();
        }
    }

    [Fact]
    public async Task A_deadline_that_passes_in_the_queue_writes_its_numbers_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        await using var h = await Harness.CreateAsync();
        var first = await h.OccupyAsync(100);
        var late = h.Client.InferAsync("m", FakeBackend.Request(1, timeout: TimeSpan.FromMilliseconds(5))).AsTask();

        try
        {
            // The deadline timer answers the queued request once its 5 ms have passed.
            h.Time.Advance(TimeSpan.FromMilliseconds(7.5));
            using var r = await late.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
            Assert.Matches(@"the deadline passed after \d+\.\d ms in the queue; the request was not run\.$", r.Message);
        }
        finally
        {
            h.Backend.Release();
        }

        (await first).Dispose();
    }

    [Fact]
    public async Task A_result_discarded_within_the_delivery_margin_writes_its_number_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        // The run takes 19 ms of fake time; the request allows 20 ms, and the last 2 ms are the delivery margin.
        await using var h = await Harness.CreateAsync(
            o =>
            {
                o.Batching.RefuseInfeasibleDeadlines = false;
                o.Batching.DeliveryMargin = TimeSpan.FromMilliseconds(2);
            },
            computeTime: _ => TimeSpan.FromMilliseconds(19));
        using var r = await h.Client.InferAsync("m", FakeBackend.Request(5, timeout: TimeSpan.FromMilliseconds(20)));
        Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
        Assert.Matches(@"the result was ready \d+\.\d ms before the deadline, within the delivery margin", r.Message);
    }

    [Fact]
    public void Rule_and_alert_descriptions_write_their_numbers_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        Assert.Equal("TopProbability 0.75 on first output", AcceptanceRule.TopProbability(0.75).ToString());
        var rule = new AlertRule { Name = "errors", Metric = AlertMetric.ErrorRate, Threshold = 0.25 };
        var alert = new AlertEvent(rule, "m", "1", AlertState.Firing, 0.375, DateTimeOffset.UnixEpoch);
        Assert.Equal("errors Firing for model 'm' version '1': ErrorRate = 0.375 (threshold 0.25)", alert.ToString());
    }

    [Fact]
    public async Task Log_lines_write_their_numbers_with_a_dot_under_a_comma_culture()
    {
        using var scope = new CultureScope("de-DE");
        // Each warm-up run takes 1.5 ms of fake time; the line is formatted as it is read, under this culture.
        await using var h = TelemetryHarness.Create(computeTime: _ => TimeSpan.FromMilliseconds(1.5), services: s => s.AddLogging(b => b.SetMinimumLevel(LogLevel.Debug)));
        await h.LoadAsync();
        var line = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 1005);
        Assert.Matches(@"warmed up in \d+\.\d ms$", line.Message);
    }
}
