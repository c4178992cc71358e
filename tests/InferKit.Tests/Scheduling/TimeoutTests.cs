using InferKit.Scheduling;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// What a request's timeout means at its edges: Timeout.InfiniteTimeSpan is "no timeout" (not "already late"), a
/// timeout too long for the clock is "never", and another negative one is refused as bad input, as is a priority
/// outside the enum.
/// </summary>
public sealed class TimeoutTests
{
    [Fact]
    public async Task An_infinite_timeout_waits_as_long_as_it_takes_even_where_the_model_has_a_default_timeout()
    {
        await using var h = await Harness.CreateAsync(o => o.Batching.DefaultTimeout = TimeSpan.FromMilliseconds(10));
        var first = await h.OccupyAsync(100);
        var patient = h.Client.InferAsync("m", FakeBackend.Request(1, timeout: Timeout.InfiniteTimeSpan)).AsTask();
        var defaulted = h.Client.InferAsync("m", FakeBackend.Request(2)).AsTask();

        // A minute in the queue: the default 10 ms has long passed for the request that took it.
        h.Time.Advance(TimeSpan.FromMinutes(1));
        h.Backend.Release();
        (await first).Dispose();

        using (var r = await patient)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(2f, r["y"].GetSpan<float>()[0]);
        }

        using (var r = await defaulted)
        {
            Assert.Equal(InferenceStatus.DeadlineExceeded, r.Status);
        }
    }

    [Theory]
    [InlineData(-1)] // the largest TimeSpan
    [InlineData(365 * 1000)] // a thousand years
    public async Task A_timeout_too_long_for_the_clock_means_never_not_already_passed(int days)
    {
        await using var h = await Harness.CreateAsync();
        var timeout = days < 0 ? TimeSpan.MaxValue : TimeSpan.FromDays(days);

        // Alone (inline), and queued behind a busy instance (the deadline timer is armed for it).
        using (var r = await h.Client.InferAsync("m", FakeBackend.Request(1, timeout: timeout)))
        {
            Assert.True(r.IsSuccess, r.Message);
        }

        var first = await h.OccupyAsync(100);
        var queued = h.Client.InferAsync("m", FakeBackend.Request(2, timeout: timeout)).AsTask();
        h.Time.Advance(TimeSpan.FromDays(1));
        h.Backend.Release();
        (await first).Dispose();
        using (var r = await queued)
        {
            Assert.True(r.IsSuccess, r.Message);
            Assert.Equal(4f, r["y"].GetSpan<float>()[0]);
        }
    }

    [Fact]
    public async Task A_negative_timeout_other_than_infinite_is_refused_as_bad_input_naming_the_value()
    {
        await using var h = await Harness.CreateAsync();
        var error = await Assert.ThrowsAsync<InvalidInferenceRequestException>(
            async () => await h.Client.InferAsync("m", FakeBackend.Request(1, timeout: TimeSpan.FromSeconds(-1))));
        Assert.Contains("Model 'm'", error.Message, StringComparison.Ordinal);
        Assert.Contains("timeout must not be negative", error.Message, StringComparison.Ordinal);
        Assert.Contains("-00:00:01", error.Message, StringComparison.Ordinal);

        // The model goes on serving.
        using var r = await h.Client.InferAsync("m", FakeBackend.Request(2));
        Assert.True(r.IsSuccess, r.Message);
    }

    [Fact]
    public async Task A_priority_that_is_not_an_InferencePriority_is_refused_as_bad_input()
    {
        await using var h = await Harness.CreateAsync();
        var error = await Assert.ThrowsAsync<InvalidInferenceRequestException>(
            async () => await h.Client.InferAsync("m", FakeBackend.Request(1, priority: (InferencePriority)7)));
        Assert.Contains("Model 'm': the request's priority must be Low, Normal, High or Critical (was 7)", error.Message, StringComparison.Ordinal);

        using var r = await h.Client.InferAsync("m", FakeBackend.Request(2, InferencePriority.Critical));
        Assert.True(r.IsSuccess, r.Message);
    }

    [Fact]
    public void Deadlines_past_the_end_of_either_clock_saturate_at_never()
    {
        const long Frequency = 1_000_000_000; // Stopwatch ticks per second on Linux
        long now = 5_000_000_000_000;
        Assert.Equal(long.MaxValue, RequestChecks.After(now, TimeSpan.MaxValue, Frequency));
        Assert.Equal(long.MaxValue, RequestChecks.After(now, DateTimeOffset.MaxValue - DateTimeOffset.UnixEpoch, Frequency));
        Assert.Equal(now + (3 * Frequency), RequestChecks.After(now, TimeSpan.FromSeconds(3), Frequency));
        Assert.Equal(now - Frequency, RequestChecks.After(now, TimeSpan.FromSeconds(-1), Frequency));

        var utc = DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(DateTimeOffset.MaxValue, RequestChecks.After(utc, TimeSpan.MaxValue));
        Assert.Equal(utc.AddMinutes(2), RequestChecks.After(utc, TimeSpan.FromMinutes(2)));
    }

    [Fact]
    public void The_deadline_timer_is_never_set_further_out_than_timers_accept()
    {
        const long Frequency = 1_000_000_000;
        Assert.Equal(TimeSpan.Zero, ModelScheduler.TimerDelay(0, Frequency));
        Assert.Equal(TimeSpan.Zero, ModelScheduler.TimerDelay(-5, Frequency));
        Assert.Equal(TimeSpan.FromMilliseconds(1), ModelScheduler.TimerDelay(Frequency / 10_000, Frequency)); // 0.1 ms rounds up
        Assert.Equal(TimeSpan.FromMilliseconds(250), ModelScheduler.TimerDelay(Frequency / 4, Frequency));
        Assert.Equal(ModelScheduler.MaxTimerDelay, ModelScheduler.TimerDelay(long.MaxValue - 1, Frequency));
        Assert.True(ModelScheduler.MaxTimerDelay.TotalMilliseconds < uint.MaxValue - 1, "timers refuse delays of 2^32 - 1 ms and more");

        // A timer from the system clock accepts the cap.
        using var timer = TimeProvider.System.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        Assert.True(timer.Change(ModelScheduler.MaxTimerDelay, Timeout.InfiniteTimeSpan));
    }
}
