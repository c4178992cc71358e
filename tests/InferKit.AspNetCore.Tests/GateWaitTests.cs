namespace InferKit.AspNetCore.Tests;

/// <summary>The gated test backends' wait is bounded, so a test that fails before it releases the gate still ends.</summary>
public sealed class GateWaitTests
{
    [Fact]
    public void A_run_left_at_a_gate_that_is_never_released_fails_after_the_gate_timeout()
    {
        using var gate = new ManualResetEventSlim(false);
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30)); // only so that an unbounded wait fails this test rather than hang it

        var ex = Assert.Throws<TimeoutException>(() => GateWait.Wait(gate, nameof(BlockingBackend), bound.Token, TimeSpan.FromMilliseconds(1)));
        Assert.Contains("never released", ex.Message, StringComparison.Ordinal);
    }
}
