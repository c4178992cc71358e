using InferKit.Scheduling;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>The learned batch latency per size, and admission judging deadlines by it.</summary>
public class BatchLatencyModelTests
{
    [Fact]
    public void A_request_larger_than_MaxBatchSize_does_not_count_as_a_batch_of_MaxBatchSize_rows()
    {
        var model = new BatchLatencyModel(4);
        model.Record(1, 0.001);
        model.Record(4, 0.004);

        // One request of 400 rows ran alone for 400 ms: that is no measure of a batch of 4 rows.
        model.Record(400, 0.4);

        Assert.InRange(model.Estimate(4), 0.0039, 0.0041);
        Assert.InRange(model.Estimate(3), 0.0029, 0.0031);
    }

    [Fact]
    public async Task After_a_request_larger_than_MaxBatchSize_ran_alone_a_full_batch_with_time_to_spare_is_admitted()
    {
        // A run takes 1 ms per row of fake time; warm-up measures 1 and 4 rows.
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 4, computeTime: rows => TimeSpan.FromMilliseconds(rows));
        using (var large = await h.Client.InferAsync("m", FakeBackend.Request(1, rows: 400)))
        {
            Assert.True(large.IsSuccess, large.Message);
        }

        using var r = await h.Client.InferAsync("m", FakeBackend.Request(2, rows: 4, timeout: TimeSpan.FromMilliseconds(50)));
        Assert.True(r.IsSuccess, $"{r.Status} {r.RefusalReason} {r.Message}");
    }
}
