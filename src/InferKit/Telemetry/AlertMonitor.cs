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
    private volatile ObserverSlot[] _observers = [];
    private readonly Queue<AlertEvent> _pending = new();
    private bool _delivering;
    private bool _disposed;
    private int _evaluating; // 1 while an evaluation runs

    /// <summary>Set under the observers' lock when disposal takes the observers: a later subscriber is completed at once.</summary>
    private bool _completed;

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

    /// <summary>
    /// Delivers alert events to <paramref name="observer"/> until the subscription is disposed; OnCompleted when the
    /// monitor is disposed, or at once when it already was.
    /// </summary>
    public IDisposable Subscribe(IObserver<AlertEvent> observer)
    {
        ArgumentNullException.ThrowIfNull(observer);
        var slot = new ObserverSlot(observer);
        lock (_observersGate)
        {
            if (!_completed)
            {
                _observers = [.. _observers, slot];
                return new Subscription(this, slot);
            }
        }

        // Disposed: the sequence has ended, so a late observer is told so at once (and gets no event), as every observer
        // subscribed before the disposal was.
        observer.OnCompleted();
        return EmptyDisposable.Instance;
    }

    /// <summary>One evaluation (the timer's callback; tests may call it through the fake clock).</summary>
    public void Evaluate()
    {
        // Skipped only while the previous evaluation still runs (a slow metric source): evaluations do not queue up. A
        // brief holder of the lock (a metrics collection reading the active alerts, an event being handed out) delays
        // this evaluation instead; before, it made the evaluation skip, so a scrape landing on a tick lost that tick.
        if (Interlocked.Exchange(ref _evaluating, 1) != 0)
        {
            return;
        }

        bool deliver;
        try
        {
            lock (_gate)
            {
                deliver = EvaluateCore();
            }
        }
        finally
        {
            Volatile.Write(ref _evaluating, 0);
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

            foreach (var slot in _observers)
            {
                // An observer that disposal has completed (or is about to) gets nothing more; one that disposal reached
                // while it was in OnNext is completed here, once OnNext has returned.
                if (!slot.TryBeginNext())
                {
                    continue;
                }

                bool complete;
                try
                {
                    slot.Observer.OnNext(e);
                }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    Log.AlertObserverFailed(_logger, e.Rule, ex);
                }
                finally
                {
                    complete = slot.EndNext();
                }

                if (complete)
                {
                    Complete(slot);
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
                    // Every metric is zero or more: at zero it is as low as it goes and counts towards clearing, so a rule
                    // whose clear threshold is 0 (one firing above 0: any backlog, any error) can clear at all.
                    state.Below = !judged || value < rule.EffectiveClearThreshold || value <= 0 ? state.Below + 1 : 0;
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
    /// one still running then is left running and logged. An observer that is in <see cref="IObserver{T}.OnNext"/> at the
    /// time is completed on the delivering thread once OnNext returns, and disposal does not wait for it: OnCompleted
    /// never overlaps OnNext, and no OnNext follows it.
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

        ObserverSlot[] observers;
        lock (_observersGate)
        {
            observers = _observers;
            _observers = [];
            _completed = true;
        }

        // An observer in OnNext now is completed by the delivering thread once OnNext returns (never during it, and it
        // gets no event after): disposal does not wait for it, as it does not wait for a running evaluation.
        List<ObserverSlot>? idle = null;
        foreach (var slot in observers)
        {
            if (slot.RequestCompletion())
            {
                (idle ??= []).Add(slot);
            }
        }

        if (idle is null)
        {
            return;
        }

        var completions = new Task[idle.Count];
        bool completed = await BoundedWait.CompletesWithinAsync(() =>
        {
            for (int i = 0; i < idle.Count; i++)
            {
                var slot = idle[i];
                completions[i] = Task.Run(() => Complete(slot), CancellationToken.None);
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
    private void Complete(ObserverSlot slot)
    {
        try
        {
            slot.Observer.OnCompleted();
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

    private void Unsubscribe(ObserverSlot slot)
    {
        lock (_observersGate)
        {
            int i = Array.IndexOf(_observers, slot);
            if (i >= 0)
            {
                var list = new List<ObserverSlot>(_observers);
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

    /// <summary>
    /// One subscription's observer and where it is in its calls, so that disposal and delivery (on different threads)
    /// keep the observer contract: OnNext calls, then at most one OnCompleted, never during an OnNext nor before one.
    /// The lock guards only the two flags; no user code runs under it.
    /// </summary>
    private sealed class ObserverSlot(IObserver<AlertEvent> observer)
    {
        private readonly Lock _gate = new();
        private bool _inNext;
        private bool _completing;

        public IObserver<AlertEvent> Observer { get; } = observer;

        /// <summary>True when the observer may get OnNext now (it is not being completed); then <see cref="EndNext"/> must follow.</summary>
        public bool TryBeginNext()
        {
            lock (_gate)
            {
                if (_completing)
                {
                    return false;
                }

                _inNext = true;
                return true;
            }
        }

        /// <summary>OnNext returned; true when completion was asked for meanwhile, and so the caller now completes the observer.</summary>
        public bool EndNext()
        {
            lock (_gate)
            {
                _inNext = false;
                return _completing;
            }
        }

        /// <summary>Asks for completion; true when the caller completes the observer now, false when the OnNext running does it when it returns.</summary>
        public bool RequestCompletion()
        {
            lock (_gate)
            {
                _completing = true;
                return !_inNext;
            }
        }
    }

    private sealed class EmptyDisposable : IDisposable
    {
        public static readonly EmptyDisposable Instance = new();

        public void Dispose()
        {
        }
    }

    private sealed class Subscription(AlertMonitor owner, ObserverSlot slot) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                owner.Unsubscribe(slot);
            }
        }
    }
}
