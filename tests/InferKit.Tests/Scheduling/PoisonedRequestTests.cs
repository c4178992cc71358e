using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// One request whose data makes the model fail (an out-of-range token id, a value a custom operator rejects) must not
/// fail the requests it was joined with: after the joined run fails, each request runs again alone, and only the one that
/// fails alone gets the error.
/// </summary>
public sealed class PoisonedRequestTests
{
    private const float Poison = 2f;

    private static InvalidOperationException? FailOnPoison(FakeBackend backend)
        => backend.Batches.Last().Contains(Poison) ? new InvalidOperationException("index 2 is out of range for the embedding table") : null;

    [Fact]
    public async Task A_request_that_makes_a_joined_run_fail_fails_alone_and_the_others_are_answered()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.MaxBatchSize = 8);
        h.Backend.Failure = () => FailOnPoison(h.Backend);
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 3).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();

        h.Backend.Release();
        (await first).Dispose();
        using (var r = await queued[0])
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(2f, r["y"].GetSpan<float>()[0]);
        }

        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => queued[1]);
        Assert.Contains("index 2 is out of range", ex.Message, StringComparison.Ordinal);
        using (var r = await queued[2])
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(6f, r["y"].GetSpan<float>()[0]);
        }

        // The joined run, then each request once alone: bounded, no retry of the joined run on the same instance.
        Assert.Equal([[100f], [1f, 2f, 3f], [1f], [2f], [3f]], h.BatchIds());
        var instance = Assert.Single(h.Registry.GetModel("m").Instances);
        Assert.Equal(0, instance.Outstanding);
        Assert.Equal(0, instance.OutstandingRows);
        Assert.Null(instance.OutUntil); // the runs alone that succeeded show the instance works
        Assert.Equal(0, h.InternalRegistry.GetScheduler("m").Active);
    }

    [Fact]
    public async Task A_request_that_fails_alone_is_not_run_again()
    {
        await using var h = await Harness.CreateAsync();
        h.Backend.Failure = () => FailOnPoison(h.Backend);
        var ex = await Assert.ThrowsAsync<InferenceFailedException>(() => h.Client.InferAsync("m", FakeBackend.Request(2)).AsTask());
        Assert.Contains("index 2 is out of range", ex.Message, StringComparison.Ordinal);
        Assert.Equal([[2f]], h.BatchIds());
    }
}
