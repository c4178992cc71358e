using InferKit.Models;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace InferKit.DependencyInjection;

/// <summary>Loads the models when the host starts (in the background: readiness shows progress) and drains them when it stops.</summary>
internal sealed class InferKitHostedService(ModelRegistry registry, IOptions<InferKitOptions> options, ILogger<InferKitHostedService> logger) : IHostedService
{
    private readonly ILogger _logger = InferKit.Telemetry.SafeLogger.Wrap(logger);
    private Task? _loading;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.LoadModelsOnStart)
        {
            _loading = LoadAsync();
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        try
        {
            bool drained = await registry.DrainAsync(options.Value.DrainTimeout, cancellationToken).ConfigureAwait(false);
            if (!drained)
            {
                InferKit.Telemetry.Log.DrainTimedOut(_logger, options.Value.DrainTimeout);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host's shutdown timeout passed: the stop is no longer graceful, but it is no failure either (thrown, it
            // would fail the host's StopAsync). Admission stays closed; the requests still running are answered as their
            // runs end, and disposing the registry unloads the models.
            InferKit.Telemetry.Log.StopCancelledWhileDraining(_logger);
        }

        if (_loading is not null)
        {
            // A load can hang (a warm-up that never returns): once the host's shutdown timeout cancels the stop, stop
            // waiting. The load goes on in the background; disposing the registry unloads whatever it produces.
            try
            {
                await _loading.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                InferKit.Telemetry.Log.StopDidNotWaitForLoading(_logger);
            }
        }
    }

    private async Task LoadAsync()
    {
        try
        {
            await registry.LoadAllAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Each failure was logged by the registry and shows in readiness and health.
            InferKit.Telemetry.Log.LoadFinishedWithFailures(_logger, ex);
        }
    }
}
