using InferKit.Tensors;
using Xunit.Sdk;

namespace InferKit.Tests.Fakes;

/// <summary>
/// A test that fails while a run waits at the fake backend's gate must fail with its own message, not hang: the host's
/// disposal waits for the held run, on a fake clock that stands still.
/// </summary>
public sealed class GateTests
{
    [Fact]
    public async Task An_assertion_that_fails_while_a_run_waits_at_the_gate_fails_the_test_instead_of_hanging_its_disposal()
    {
        Task<InferenceResponse>? held = null;

        // A test body as the scheduler tests write them, failing before it releases the gate.
        var body = Task.Run(async () =>
        {
            await using var h = await Harness.CreateAsync();
            h.Backend.GateTimeout = Timeout.InfiniteTimeSpan; // only the harness's disposal may let the run go
            held = await h.OccupyAsync();
            Assert.Fail("deliberate failure while the gate is closed");
        });

        var failure = await Assert.ThrowsAsync<FailException>(() => body.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("deliberate failure while the gate is closed", failure.Message);

        // The held run was let go and answered, not left blocked.
        using var response = await held!.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(response.IsSuccess, response.Message);
    }

    [Fact]
    public void A_run_left_at_a_gate_that_is_never_released_fails_after_the_gate_timeout()
    {
        // For hosts the harness does not dispose: the wait is bounded, and says why it ended.
        var backend = new FakeBackend { GateTimeout = TimeSpan.FromMilliseconds(1) };
        backend.Hold();
        var x = Tensor.Create("x", new float[] { 1, 0 }, 1, 2);
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30)); // only so that an unbounded gate fails this test rather than hang it

        var ex = Assert.Throws<TimeoutException>(() => backend.Run([x], null!, bound.Token));
        Assert.Contains("never released", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_wait_at_a_test_gate_that_is_never_opened_fails_after_its_timeout_and_says_so()
    {
        var gate = new Gate("the load of 'm'") { Timeout = TimeSpan.FromMilliseconds(1) };
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30)); // only so that an unbounded wait fails this test rather than hang it

        var blocking = Assert.Throws<TimeoutException>(() => gate.Wait(bound.Token));
        Assert.Equal("Gate 'the load of 'm'': waited 00:00:00.0010000 and was never released (the test failed or ended before it opened the gate).", blocking.Message);
        var awaiting = await Assert.ThrowsAsync<TimeoutException>(() => gate.WaitAsync(bound.Token));
        Assert.Equal(blocking.Message, awaiting.Message);
    }

    [Fact]
    public async Task A_test_gate_opened_on_dispose_lets_a_waiting_load_go_before_the_scope_that_declared_it_ends()
    {
        var gate = new Gate("a load");
        Task waiting;
        using (gate.OpenOnDispose())
        {
            waiting = Task.Run(() => gate.Wait());
            Assert.False(gate.IsOpen);
        }

        Assert.True(gate.IsOpen);
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));
        gate.Wait(); // an open gate does not wait
        await gate.WaitAsync();
    }
}
