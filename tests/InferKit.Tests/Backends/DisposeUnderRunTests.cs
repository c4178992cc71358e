using System.Collections.Concurrent;
using InferKit.Backends;
using InferKit.Backends.Onnx;
using InferKit.Tensors;
using InferKit.TestModels;
using Microsoft.Extensions.Logging.Abstractions;

namespace InferKit.Tests.Backends;

/// <summary>
/// A backend disposed while runs are in flight: they finish with their outputs, and the sessions are released once, by
/// the last run to leave. Using a released session crashes the process, so these tests also read
/// <see cref="OnnxModelBackend.LiveSessions"/> (hence the non-parallel collection).
/// </summary>
[Collection(OnnxSessionCounterGroup.Name)]
public sealed class DisposeUnderRunTests
{
    private const double Tolerance = 1e-4;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    // lanes 1: one session; 2: a main session and a separate single-threaded lane session.
    private static OnnxModelBackend Create(MlpModel mlp, int lanes) => OnnxModelBackend.Create("dispose-under-run", new OnnxModelData(mlp.ToOnnx(), null),
        lanes == 1 ? new OnnxSessionSettings { IntraOpThreads = 1 } : new OnnxSessionSettings { IntraOpThreads = 2, Lanes = lanes },
        null, null, hostInstances: 1, NullLogger.Instance);

    private static Task<T> StartThread<T>(Func<T> body)
        => Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_run_in_flight_at_dispose_returns_its_outputs_and_then_releases_the_sessions_once(int lanes)
    {
        int before = OnnxModelBackend.LiveSessions;
        var mlp = new MlpModel(inputSize: 8, hiddenSize: 16, classes: 3, seed: 31);
        var backend = Create(mlp, lanes);
        Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);

        const int rows = 3;
        var input = mlp.CreateInputs(rows, seed: 41);
        var probabilities = mlp.Forward(input, rows, out var logits);
        using var parked = new ManualResetEventSlim();
        using var gate = new ManualResetEventSlim();
        backend.AfterSessionChosen = () =>
        {
            parked.Set();
            gate.Wait(Patience);
        };

        var sink = new CopySink();
        var run = StartThread(() =>
        {
            backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, CancellationToken.None);
            return true;
        });
        try
        {
            Assert.True(parked.Wait(Patience), "the run never reached its session");

            // Dispose returns at once, with the run still parked on its session: nothing is released under it.
            backend.Dispose();
            Assert.False(backend.SessionsReleased, "Dispose released the sessions under a run in flight");
            Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);

            // A run that starts now is refused, and backing out does not release the sessions either.
            Assert.Throws<ObjectDisposedException>(() => backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], new CopySink(), CancellationToken.None));
            Assert.False(backend.SessionsReleased, "a refused run released the sessions under a run in flight");
        }
        finally
        {
            gate.Set();
        }

        Assert.True(await run.WaitAsync(Patience));
        OnnxTestServices.AssertClose(logits, sink.Outputs[0], Tolerance, "logits");
        OnnxTestServices.AssertClose(probabilities, sink.Outputs[1], Tolerance, "probabilities");

        // The run that left last released everything, once.
        Assert.True(backend.SessionsReleased);
        Assert.Equal(before, OnnxModelBackend.LiveSessions);
        Assert.Equal(0, backend.PooledContexts);
        backend.Dispose();
        Assert.Throws<ObjectDisposedException>(() => backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], new CopySink(), CancellationToken.None));
        Assert.Equal(before, OnnxModelBackend.LiveSessions);
    }

    [Fact]
    public async Task Runs_racing_dispose_end_with_their_outputs_or_ObjectDisposedException_and_the_sessions_are_released_once()
    {
        // Each round: workers run in a loop until refused, and the test thread disposes once they are under way. In two
        // rounds of three one run is parked on its session across the Dispose, so a release is always deferred there;
        // in the others Dispose lands wherever the runs are, and the release falls to Dispose or to a run.
        const int Rounds = 12;
        const int Workers = 4;
        const int rows = 2;
        int before = OnnxModelBackend.LiveSessions;
        var mlp = new MlpModel(inputSize: 8, hiddenSize: 16, classes: 3, seed: 32);
        var input = mlp.CreateInputs(rows, seed: 42);
        var probabilities = mlp.Forward(input, rows, out var logits);
        int completed = 0;
        for (int round = 0; round < Rounds; round++)
        {
            var backend = Create(mlp, lanes: round % 2 == 0 ? 1 : 2);
            bool park = round % 3 != 2;
            var failures = new ConcurrentQueue<string>();
            int chosen = 0;
            using var underWay = new ManualResetEventSlim();
            using var gate = new ManualResetEventSlim();
            backend.AfterSessionChosen = () =>
            {
                if (backend.SessionsReleased)
                {
                    failures.Enqueue("a run chose a session that was already released");
                }

                if (Interlocked.Increment(ref chosen) == Workers * 4)
                {
                    underWay.Set();
                    if (park)
                    {
                        gate.Wait(Patience);
                    }
                }
            };

            var workers = new Task<int>[Workers];
            for (int w = 0; w < Workers; w++)
            {
                workers[w] = StartThread(() =>
                {
                    for (int done = 0; ; done++)
                    {
                        var sink = new GuardedSink(backend, failures);
                        try
                        {
                            backend.Run([Tensor.Create(MlpModel.InputName, input, rows, mlp.InputSize)], sink, CancellationToken.None);
                        }
                        catch (ObjectDisposedException)
                        {
                            return done;
                        }
                        catch (Exception ex)
                        {
                            failures.Enqueue(ex.ToString());
                            return done;
                        }

                        try
                        {
                            Assert.Equal(2, sink.Outputs.Count);
                            OnnxTestServices.AssertClose(logits, sink.Outputs[0], Tolerance, "logits");
                            OnnxTestServices.AssertClose(probabilities, sink.Outputs[1], Tolerance, "probabilities");
                        }
                        catch (Exception ex)
                        {
                            failures.Enqueue($"a run returned wrong outputs: {ex.Message}");
                        }
                    }
                });
            }

            try
            {
                Assert.True(underWay.Wait(Patience), "the runs never got under way");
                backend.Dispose();
                if (park)
                {
                    Assert.False(backend.SessionsReleased, "Dispose released the sessions under a run in flight");
                    Assert.Equal(before + 1, OnnxModelBackend.LiveSessions);
                }
            }
            finally
            {
                gate.Set();
            }

            var runs = await Task.WhenAll(workers).WaitAsync(Patience);
            Assert.True(failures.IsEmpty, $"round {round}: " + string.Join(Environment.NewLine, failures));
            Assert.True(backend.SessionsReleased);
            Assert.Equal(before, OnnxModelBackend.LiveSessions);
            Assert.Equal(0, backend.PooledContexts);
            completed += runs.Sum();
        }

        // Every run that reached its session before the Dispose finished: at least the ones counted before it.
        Assert.True(completed >= Rounds * Workers * 4, $"only {completed} runs completed");
    }

    /// <summary>Copies outputs, noting any handed over after the backend released its sessions.</summary>
    private sealed class GuardedSink(OnnxModelBackend backend, ConcurrentQueue<string> failures) : IBackendOutputSink
    {
        private readonly CopySink _copy = new();

        public List<float[]> Outputs => _copy.Outputs;

        public void OnOutput(int outputIndex, TensorElementType elementType, ReadOnlySpan<long> shape, ReadOnlySpan<byte> data)
        {
            if (backend.SessionsReleased)
            {
                failures.Enqueue("an output was read after the sessions were released");
            }

            _copy.OnOutput(outputIndex, elementType, shape, data);
        }

        public void OnStringOutput(int outputIndex, ReadOnlySpan<long> shape, ReadOnlySpan<string> data)
            => _copy.OnStringOutput(outputIndex, shape, data);
    }
}
