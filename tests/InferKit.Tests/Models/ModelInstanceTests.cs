using InferKit.Models;
using InferKit.Tests.Fakes;
using Microsoft.Extensions.Time.Testing;

namespace InferKit.Tests.Models;

/// <summary>Passive health of one instance: taken out after failures, back after its back-off.</summary>
public sealed class ModelInstanceTests
{
    private static (ModelInstance Instance, FakeTimeProvider Time) Create(int failureThreshold, int maxConcurrency = 1)
    {
        var time = new FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var health = new InstanceHealthOptions
        {
            FailureThreshold = failureThreshold,
            BackOff = TimeSpan.FromSeconds(10),
            MaxBackOff = TimeSpan.FromMinutes(10),
        };
        return (new ModelInstance(0, "m/1/0", new FakeBackend(), null, maxConcurrency, health, time), time);
    }

    private static bool Fail(ModelInstance instance)
    {
        Assert.True(instance.TryReserve());
        instance.AddRows(1);
        return instance.Complete(1, 0.001, failed: true);
    }

    private static TimeSpan OutFor(ModelInstance instance, FakeTimeProvider time)
        => time.GetElapsedTime(time.GetTimestamp(), instance.OutUntilTimestamp);

    [Fact]
    public void An_instance_that_fails_again_on_its_first_run_after_the_back_off_is_taken_out_again_at_once_for_twice_as_long()
    {
        var (instance, time) = Create(failureThreshold: 3);
        Assert.False(Fail(instance));
        Assert.False(Fail(instance));
        Assert.True(Fail(instance));
        Assert.Equal(TimeSpan.FromSeconds(10), OutFor(instance, time));

        // Back in rotation after the back-off, on probation until a good run: still failing, it goes out again at once
        // (the back-off doubles), rather than taking FailureThreshold more failed batches first.
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.True(instance.IsAvailable(time.GetTimestamp()));
        Assert.True(Fail(instance), "the first failure on probation did not take the instance out again");
        Assert.False(instance.IsAvailable(time.GetTimestamp()));
        Assert.Equal(TimeSpan.FromSeconds(20), OutFor(instance, time));

        // A good run after the next back-off restores it fully: the threshold applies again.
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.True(instance.TryReserve());
        instance.AddRows(1);
        Assert.False(instance.Complete(1, 0.001, failed: false));
        Assert.Equal(0, instance.OutUntilTimestamp);
        Assert.False(Fail(instance));
        Assert.True(instance.IsAvailable(time.GetTimestamp()));
    }

    [Fact]
    public void Runs_already_in_flight_that_fail_after_the_instance_was_taken_out_do_not_take_it_out_again_or_lengthen_its_back_off()
    {
        var (instance, time) = Create(failureThreshold: 1, maxConcurrency: 3);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(instance.TryReserve());
            instance.AddRows(1);
        }

        // Three batches were running when the instance broke; the first failure takes it out.
        Assert.True(instance.Complete(1, 0.001, failed: true));
        Assert.False(instance.Complete(1, 0.001, failed: true), "a run that started before the take-out took the instance out again");
        Assert.False(instance.Complete(1, 0.001, failed: true));
        Assert.Equal(TimeSpan.FromSeconds(10), OutFor(instance, time));
        Assert.Equal(3, instance.ToInfo().TotalFailures);
        Assert.Equal(0, instance.Outstanding);
        Assert.Equal(0, instance.OutstandingRows);
    }
}
