using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace InferKit.Telemetry;

/// <summary>
/// Evaluates the alert rules on a <see cref="TimeProvider"/> timer: each tick reads every model's sliding window,
/// applies each rule's hysteresis (N evaluations above the threshold to fire, M below the clear threshold to clear),
/// raises events to subscribers and logs them, then advances the windows. Without rules it does nothing.
/// </summary>
internal sealed class AlertMonitor : IInferKitAlerts, IDisposable, IAsyncDisposable
{
    private const int MaxPendingEvents = 1024;

    private readonly InferKitMetrics _hub;
    private readonly AlertRule[] _rules;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ITimer? _timer;
    private readonly Lock _gate = new();
    private readonly Lock _observersGate = new();
    private readonly Dictionary<(string Rule, string Model, string Version), RuleState> _states = new();
    private volatile AlertEvent[] _firing = [];
    private volatile IObserver<AlertEvent>[] _observers = [];
    private readonly Queue<AlertEvent> _pending = new();
    private bool _delivering;
    private bool _disposed;

    public AlertMonitor(InferKitMetrics hub, AlertingOptions options, TimeProvider time, ILogger logger)
    {
        _hub = hub;
        _time = time;
        _logger = SafeLogger.Wrap(logger);
        _rules = [.. options.Rules];
        long interval = Math.Max(1, options.EvaluationInterval.Ticks);
        Slots = (int)Math.Clamp((options.Window.Ticks + interval - 1) / interval, 1, 1000);
        if (_rules.Length > 0)
        {
            _timer = time.CreateTimer(static s => ((AlertMonitor)s!).Evaluate(), this, options.EvaluationInterval, options.EvaluationInterval);
        }
    }

    /// <summary>True when there are rules (and so per-model windows are collected).</summary>
    public bool Enabled => _rules.Length > 0;

    /// <summary>Slots per window: the window in evaluation intervals.</summary>
    public int Slots { get; }

    public IReadOnlyList<AlertEvent> Firing => _firing;

    public bool IsFiring(string model)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var e in _firing)
        {
            if (string.Equals(e.Model, model, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    public IDisposable Subscribe(IObserver<AlertEvent> observer)
    {
        ArgumentNullException.ThrowIfNull(observer);
        lock (_observersGate)
        {
            _observers = [.. _observers, observer];
        }

        return new Subscription(this, observer);
    }

    /// <summary>One evaluation (the timer's callback; tests may call it through the fake clock).</summary>
    public void Evaluate()
    {
        if (!_gate.TryEnter())
        {
            return; // the previous evaluation is still running
        }

        bool deliver;
        try
        {
            deliver = EvaluateCore();
        }
        finally
        {
            _gate.Exit();
        }

        if (deliver)
        {
            Deliver();
        }
    }

    /// <summary>
    /// Raises the queued events, in order, outside <see cref="_gate"/>: an observer that blocks holds up only this thread
    /// (later evaluations queue their events behind it), never <see cref="Dispose"/> or <see cref="Observe"/>.
    /// </summary>
    private void Deliver()
    {
        while (true)
        {
            AlertEvent e;
            lock (_gate)
            {
                if (!_pending.TryDequeue(out e!))
                {
                    _delivering = false;
                    return;
                }
            }

            if (e.State == AlertState.Firing)
            {
                Log.AlertFiring(_logger, e.Rule, e.Model, e.Version, e.Metric, e.Value, e.Threshold);
            }
            else
            {
                Log.AlertResolved(_logger, e.Rule, e.Model, e.Version, e.Metric, e.Value, e.Threshold);
            }

            foreach (var observer in _observers)
            {
                try
                {
                    observer.OnNext(e);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    Log.AlertObserverFailed(_logger, e.Rule, ex);
                }
            }
        }
    }

    /// <summary>One evaluation under <see cref="_gate"/>; true when this thread is to deliver the events it queued.</summary>
    private bool EvaluateCore()
    {
        if (_disposed)
        {
            return false;
        }

        List<AlertEvent>? raised = null;
        var now = _time.GetUtcNow();
        foreach (var model in _hub.Models)
        {
            var window = model.Window;
            if (window is null)
            {
                continue;
            }

            var snapshot = window.Snapshot();
            int queued = model.QueueLength;
            foreach (var rule in _rules)
            {
                if (rule.Model is not null && !string.Equals(rule.Model, model.Model, StringComparison.Ordinal))
                {
                    continue;
                }

                var key = (rule.Name, model.Model, model.Version);
                if (!_states.TryGetValue(key, out var state))
                {
                    state = new RuleState(rule, model);
                    _states[key] = state;
                }

                var (judged, value) = Measure(rule, snapshot, queued);
                state.LastValue = value;
                if (state.Firing is null)
                {
                    state.Above = judged && value > rule.Threshold ? state.Above + 1 : 0;
                    if (state.Above >= rule.FireAfter)
                    {
                        state.Above = 0;
                        state.Below = 0;
                        state.Firing = new AlertEvent(rule, model.Model, model.Version, AlertState.Firing, value, now);
                        (raised ??= []).Add(state.Firing);
                    }
                }
                else
                {
                    state.Below = !judged || value < rule.EffectiveClearThreshold ? state.Below + 1 : 0;
                    if (state.Below >= rule.ClearAfter)
                    {
                        state.Above = 0;
                        state.Below = 0;
                        state.Firing = null;
                        (raised ??= []).Add(new AlertEvent(rule, model.Model, model.Version, AlertState.Resolved, value, now));
                    }
                }
            }

            window.Advance();
        }

        if (raised is null)
        {
            return false;
        }

        var firing = new List<AlertEvent>();
        foreach (var s in _states.Values)
        {
            if (s.Firing is not null)
            {
                firing.Add(s.Firing);
            }
        }

        _firing = [.. firing];
        foreach (var e in raised)
        {
            // Bounded: behind an observer that never returns, the oldest undelivered events are kept, later ones dropped.
            if (_pending.Count < MaxPendingEvents)
            {
                _pending.Enqueue(e);
            }
        }

        if (_delivering)
        {
            return false; // the thread delivering now takes these too, after the ones before them
        }

        _delivering = true;
        return true;
    }

    /// <summary>The <c>inferkit.alerts.active</c> series: one per rule and model evaluated so far.</summary>
    public IEnumerable<Measurement<int>> Observe()
    {
        List<Measurement<int>> list;
        lock (_gate)
        {
            list = new List<Measurement<int>>(_states.Count);
            foreach (var s in _states.Values)
            {
                var tags = s.Telemetry.Tags;
                tags.Add(InferKitTelemetry.RuleTag, s.Rule.Name);
                list.Add(new Measurement<int>(s.Firing is null ? 0 : 1, tags));
            }
        }

        return list;
    }

    /// <summary>How long disposal waits for the observers' <see cref="IObserver{T}.OnCompleted"/> calls before it goes on without them.</summary>
    internal static readonly TimeSpan CompletionTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Stops evaluating and completes every observer. Observers are user code: each <see cref="IObserver{T}.OnCompleted"/>
    /// runs on the thread pool, and disposal waits for them at most <see cref="CompletionTimeout"/> (on the injected clock);
    /// one still running then is left running and logged.
    /// </summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <inheritdoc cref="Dispose"/>
    public async ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            _disposed = true;
        }

        _timer?.Dispose(); // not DisposeAsync: that waits for a running evaluation, which may be blocked in an observer's OnNext

        IObserver<AlertEvent>[] observers;
        lock (_observersGate)
        {
            observers = _observers;
            _observers = [];
        }

        if (observers.Length == 0)
        {
            return;
        }

        var completions = new Task[observers.Length];
        bool completed = await BoundedWait.CompletesWithinAsync(() =>
        {
            for (int i = 0; i < observers.Length; i++)
            {
                var observer = observers[i];
                completions[i] = Task.Run(() => Complete(observer), CancellationToken.None);
            }

            return Task.WhenAll(completions);
        }, CompletionTimeout, _time).ConfigureAwait(false);
        if (!completed)
        {
            int running = 0;
            foreach (var c in completions)
            {
                running += c.IsCompleted ? 0 : 1;
            }

            Log.AlertObserversDidNotComplete(_logger, running, CompletionTimeout);
        }
    }

    /// <summary>Tells one observer there are no more events; what it throws is logged.</summary>
    private void Complete(IObserver<AlertEvent> observer)
    {
        try
        {
            observer.OnCompleted();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Log.AlertObserverFailed(_logger, "(completion)", ex);
        }
    }

    private static (bool Judged, double Value) Measure(AlertRule rule, in WindowSnapshot window, int queued) => rule.Metric switch
    {
        AlertMetric.P99Latency => (window.LatencyCount > 0 && window.LatencyCount >= rule.MinimumRequests, window.P99Seconds),
        AlertMetric.ErrorRate => (window.Total > 0 && window.Total >= rule.MinimumRequests, window.ErrorRate),
        AlertMetric.RefusalRate => (window.Total > 0 && window.Total >= rule.MinimumRequests, window.RefusalRate),
        AlertMetric.QueueLength => (true, queued),
        _ => throw new UnreachableException($"Alert metric {rule.Metric} is not handled."),
    };

    private void Unsubscribe(IObserver<AlertEvent> observer)
    {
        lock (_observersGate)
        {
            int i = Array.IndexOf(_observers, observer);
            if (i >= 0)
            {
                var list = new List<IObserver<AlertEvent>>(_observers);
                list.RemoveAt(i);
                _observers = [.. list];
            }
        }
    }

    private sealed class RuleState(AlertRule rule, ModelTelemetry telemetry)
    {
        public AlertRule Rule { get; } = rule;

        public ModelTelemetry Telemetry { get; } = telemetry;

        public int Above { get; set; }

        public int Below { get; set; }

        public double LastValue { get; set; }

        public AlertEvent? Firing { get; set; }
    }

    private sealed class Subscription(AlertMonitor owner, IObserver<AlertEvent> observer) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                owner.Unsubscribe(observer);
            }
        }
    }
}
