namespace InferKit.Tests.Fakes;

/// <summary>
/// A gate that a fake's run, load, disposal or callback waits at until the test opens it. The wait is bounded
/// (<see cref="DefaultTimeout"/>) and then throws a <see cref="TimeoutException"/> that says the gate was never released,
/// so a test that fails or ends before it opens the gate still ends, however its host waits for the held work. Declare
/// <see cref="OpenOnDispose"/> after the host (<c>await using</c>), so that the gate opens before the host's disposal
/// waits for what the gate holds, and a failing assertion fails the test with its own message.
/// </summary>
internal sealed class Gate(string name)
{
    /// <summary>How long a wait at a gate lasts before it gives up: far longer than any test needs.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>What the gate holds, for the timeout's message.</summary>
    public string Name { get; } = name;

    /// <summary>How long a wait lasts before it throws; <see cref="DefaultTimeout"/> unless set.</summary>
    public TimeSpan Timeout { get; init; } = DefaultTimeout;

    public bool IsOpen => _opened.Task.IsCompleted;

    /// <summary>Lets every current and future wait go; opening an open gate does nothing.</summary>
    public void Open() => _opened.TrySetResult();

    /// <summary>Blocks until the gate opens, or throws after <see cref="Timeout"/>.</summary>
    public void Wait(CancellationToken cancellationToken = default)
    {
        if (!_opened.Task.Wait(Timeout, cancellationToken))
        {
            throw NeverReleased();
        }
    }

    /// <summary>Completes when the gate opens, or throws after <see cref="Timeout"/>.</summary>
    public async Task WaitAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            await _opened.Task.WaitAsync(Timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            throw NeverReleased();
        }
    }

    /// <summary>Opens the gate when disposed: <c>using var open = gate.OpenOnDispose();</c>, declared after the host.</summary>
    public GateOpener OpenOnDispose() => new(Open);

    private TimeoutException NeverReleased() =>
        new($"Gate '{Name}': waited {Timeout} and was never released (the test failed or ended before it opened the gate).");
}

/// <summary>
/// Opens a gate (runs <paramref name="open"/>) when disposed, so that a test's failing assertion does not leave a run or a
/// load held while the host's disposal waits for it. Declare it after the host, so that it is disposed first:
/// <c>using var release = new GateOpener(backend.Release);</c>.
/// </summary>
internal sealed class GateOpener(Action open) : IDisposable
{
    public void Dispose() => open();
}
