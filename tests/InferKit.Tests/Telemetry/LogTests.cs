using Microsoft.Extensions.Logging;

namespace InferKit.Tests.Telemetry;

public sealed class LogTests
{
    [Fact]
    public async Task Refusals_are_logged_as_one_summary_per_model_and_reason_per_interval_never_one_per_request()
    {
        await using var h = TelemetryHarness.Create(o => o.Batching.MaxQueueLength = 1);
        await h.LoadAsync();
        var first = await h.OccupyAsync(1);
        var queued = h.Send(2).AsTask();
        for (int i = 0; i < 5; i++)
        {
            (await h.Send(10 + i)).Dispose();
        }

        Assert.DoesNotContain(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 2001);
        h.Time.Advance(TimeSpan.FromSeconds(10));
        var line = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 2001);
        Assert.Equal(LogLevel.Warning, line.Level);
        Assert.Equal("Model 'm': 5 request(s) refused in the last interval (queue_full)", line.Message);

        // A quiet interval logs nothing; the next refusal is summarized one interval later.
        h.Time.Advance(TimeSpan.FromSeconds(10));
        Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 2001);
        (await h.Send(20)).Dispose();
        h.Time.Advance(TimeSpan.FromSeconds(10));
        var lines = h.Logs.Collector.GetSnapshot().Where(r => r.Id.Id == 2001).ToList();
        Assert.Equal(2, lines.Count);
        Assert.Equal("Model 'm': 1 request(s) refused in the last interval (queue_full)", lines[1].Message);

        h.Backend.Release();
        (await first).Dispose();
        (await queued).Dispose();
    }

    [Fact]
    public async Task Serving_requests_logs_nothing_at_Information_or_above()
    {
        await using var h = TelemetryHarness.Create(o => o.Batching.MaxBatchSize = 4);
        await h.LoadAsync();
        h.Logs.Collector.Clear();
        var first = await h.OccupyAsync(1);
        var queued = Enumerable.Range(2, 10).Select(i => h.Send(i).AsTask()).ToArray();
        h.Backend.Release();
        (await first).Dispose();
        foreach (var t in queued)
        {
            (await t).Dispose();
        }

        Assert.DoesNotContain(h.Logs.Collector.GetSnapshot(), r => r.Level >= LogLevel.Information);
    }

    [Fact]
    public async Task An_instance_taken_out_and_back_is_logged_once_each_way()
    {
        await using var h = TelemetryHarness.Create(o =>
        {
            o.Health.FailureThreshold = 1;
            o.Health.BackOff = TimeSpan.FromSeconds(5);
            o.Health.RetryOnAnotherInstance = false;
        });
        await h.LoadAsync();
        h.Backend.Failure = () => new InvalidOperationException("boom");
        await Assert.ThrowsAsync<InferenceFailedException>(async () => await h.Send(1));
        h.Backend.Failure = null;
        var takenOut = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 3001);
        Assert.Equal(LogLevel.Warning, takenOut.Level);
        Assert.Contains("m/1/0", takenOut.Message, StringComparison.Ordinal);

        h.Time.Advance(TimeSpan.FromSeconds(5));
        (await h.Send(2)).EnsureSuccess().Dispose();
        (await h.Send(3)).EnsureSuccess().Dispose();
        var back = Assert.Single(h.Logs.Collector.GetSnapshot(), r => r.Id.Id == 3002);
        Assert.Equal("Model 'm' instance m/1/0 is back in rotation", back.Message);
    }
}
