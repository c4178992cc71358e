using System.Diagnostics.Tracing;
using InferKit.Tensors;
using InferKit.Tests.Fakes;

namespace InferKit.Tests.Scheduling;

/// <summary>
/// The buffers a batch rents to join its requests' inputs go back to the shared pool once the batch is done, also when
/// the join itself throws after renting one.
/// </summary>
public sealed class JoinBufferTests
{
    [Fact]
    public async Task A_join_that_throws_after_renting_its_buffer_returns_that_buffer_to_the_pool_once()
    {
        using var pool = new ArrayPoolWatch();
        await using var h = await Harness.CreateAsync(o =>
        {
            o.Batching.MaxBatchSize = 8;
            o.Health.FailureThreshold = 100;
        });
        var scheduler = h.InternalRegistry.GetScheduler("m");

        // Two requests queue behind a held run and are joined into one batch when it ends.
        var first = await h.OccupyAsync(100);
        var queued = Enumerable.Range(1, 2).Select(i => h.Client.InferAsync("m", FakeBackend.Request(i)).AsTask()).ToArray();
        scheduler.BeforeJoin = batch =>
        {
            if (batch.Count < 2)
            {
                return;
            }

            // The second request's input becomes one byte per element where the model takes float32: its shape still
            // fits, so the joined buffer is rented, and copying that request's row into it throws (8 bytes asked of 2).
            batch[1].Inputs[0] = Tensor.Create("x", new byte[2], 1, 2);
            ArrayPoolWatch.WatchNextRentOnThisThread();
        };

        try
        {
            h.Backend.Release();
            (await first.WaitAsync(TimeSpan.FromSeconds(30))).Dispose();
            foreach (var t in queued)
            {
                await Assert.ThrowsAsync<InferenceFailedException>(() => t.WaitAsync(TimeSpan.FromSeconds(30)));
            }
        }
        finally
        {
            scheduler.BeforeJoin = null;
            h.Backend.Release();
        }

        // The failure is delivered after the batch released its inputs: the joined buffer went back, and only once.
        Assert.True(pool.Watched is not null, "the join rented no buffer");
        Assert.Equal(1, pool.ReturnsOfWatched);
        Assert.Equal(0, scheduler.Active);

        using var ok = await h.Client.InferAsync("m", FakeBackend.Request(9));
        Assert.True(ok.IsSuccess, ok.Message);
    }

    /// <summary>
    /// Follows one buffer of the shared array pools through their event source (every rent and return is reported on
    /// the thread that makes it): the first one rented on a thread after <see cref="WatchNextRentOnThisThread"/>, then
    /// every return of it, on any thread.
    /// </summary>
    private sealed class ArrayPoolWatch : EventListener
    {
        private const int BufferRented = 1;
        private const int BufferReturned = 3;

        [ThreadStatic]
        private static bool t_watching;

        private readonly Lock _gate = new();
        private (int Id, int Size)? _watched;
        private int _returns;

        public (int Id, int Size)? Watched
        {
            get
            {
                lock (_gate)
                {
                    return _watched;
                }
            }
        }

        public int ReturnsOfWatched
        {
            get
            {
                lock (_gate)
                {
                    return _returns;
                }
            }
        }

        public static void WatchNextRentOnThisThread() => t_watching = true;

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "System.Buffers.ArrayPoolEventSource")
            {
                EnableEvents(eventSource, EventLevel.Verbose);
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.Payload is not { Count: >= 2 } payload || payload[0] is not int id || payload[1] is not int size)
            {
                return;
            }

            if (eventData.EventId == BufferRented && t_watching)
            {
                t_watching = false;
                lock (_gate)
                {
                    _watched = (id, size);
                }
            }
            else if (eventData.EventId == BufferReturned)
            {
                lock (_gate)
                {
                    if (_watched == (id, size))
                    {
                        _returns++;
                    }
                }
            }
        }
    }
}
