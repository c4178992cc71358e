using InferKit.Tests.Fakes;

namespace InferKit.Tests.LoadBalancing;

/// <summary>Weighted least connections over instances whose weight is learned from measured throughput (no configured weight).</summary>
public sealed class LearnedWeightTests
{
    [Fact]
    public async Task An_instance_not_yet_measured_is_tried_rather_than_starved_by_one_measured_in_rows_per_second()
    {
        // 1 ms per batch: the first instance to run learns 1000 rows/s. An instance not yet measured must not keep the
        // placeholder weight 1 beside it (1000 times slower on paper), or it never runs and so is never measured.
        await using var h = await Harness.CreateAsync(o =>
        {
            o.LoadBalancing = "WeightedLeastConnections";
            o.Batching.AllowInlineExecution = true;
        }, instances: 2, computeTime: _ => TimeSpan.FromMilliseconds(1));

        for (int i = 1; i <= 20; i++)
        {
            using var r = await h.Client.InferAsync("m", FakeBackend.Request(i));
            Assert.True(r.IsSuccess, r.Message);
        }

        Assert.All(h.Backends, b => Assert.True(b.Runs > 0, $"{b.Name} ran {b.Runs} of 20 batches; runs per instance: {string.Join(", ", h.Backends.Select(x => x.Runs))}."));
        Assert.All(h.Registry.GetModel("m").Instances, i => Assert.True(i.Weight > 100, $"{i.Id} weight {i.Weight}"));
    }
}
