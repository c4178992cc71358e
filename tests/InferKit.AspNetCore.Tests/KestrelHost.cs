using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using InferKit.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace InferKit.AspNetCore.Tests;

/// <summary>A real Kestrel server on 127.0.0.1 with an ephemeral port, serving InferKit's endpoints.</summary>
internal sealed class KestrelHost : IAsyncDisposable
{
    private KestrelHost(WebApplication app, Uri address, RecordingClient recorder)
    {
        App = app;
        Recorder = recorder;
        Client = new HttpClient { BaseAddress = address };
    }

    public WebApplication App { get; }

    public HttpClient Client { get; }

    public RecordingClient Recorder { get; }

    public IModelRegistry Registry => App.Services.GetRequiredService<IModelRegistry>();

    /// <summary>Starts a server. Models are not loaded at start: call <see cref="LoadAsync"/> (or let <paramref name="load"/> do it).</summary>
    public static async Task<KestrelHost> StartAsync(
        Action<IInferKitBuilder> models,
        Action<RouteGroupBuilder>? group = null,
        Action<WebApplicationBuilder>? configure = null,
        Action<WebApplication>? middleware = null,
        string prefix = "",
        bool load = true)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        models(builder.Services.AddInferKit(o => o.LoadModelsOnStart = false));
        RecordingClient? recorder = null;
        builder.Services.AddSingleton<IInferenceClient>(sp => recorder = new RecordingClient((IInferenceClient)sp.GetRequiredService<IModelRegistry>()));
        configure?.Invoke(builder);
        var app = builder.Build();
        middleware?.Invoke(app);
        var g = app.MapInferKit(prefix);
        group?.Invoke(g);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        var host = new KestrelHost(app, new Uri(address), recorder!);
        if (load)
        {
            await host.LoadAsync();
        }

        return host;
    }

    public Task LoadAsync() => Registry.LoadAllAsync();

    public Task<HttpResponseMessage> PostJsonAsync(string path, string json, Action<HttpRequestMessage>? configure = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        configure?.Invoke(request);
        return Client.SendAsync(request);
    }

    /// <summary>Posts a JSON header followed by binary tensor data, as Triton's client does.</summary>
    public Task<HttpResponseMessage> PostBinaryAsync(string path, string json, byte[] binary, Action<HttpRequestMessage>? configure = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var body = new byte[header.Length + binary.Length];
        header.CopyTo(body, 0);
        binary.CopyTo(body, header.Length);
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = content };
        request.Headers.Add(InferKitHeaders.InferenceHeaderContentLength, header.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        configure?.Invoke(request);
        return Client.SendAsync(request);
    }

    public static async Task<JsonDocument> JsonAsync(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsByteArrayAsync());

    /// <summary>Reads the "error" of an error response, checking it is JSON.</summary>
    public static async Task<string> ErrorAsync(HttpResponseMessage response)
    {
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = await JsonAsync(response);
        return doc.RootElement.GetProperty("error").GetString()!;
    }

    /// <summary>Splits a response with binary data into its JSON part and its binary part.</summary>
    public static async Task<(JsonDocument Json, byte[] Binary)> SplitAsync(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsByteArrayAsync();
        if (!response.Headers.TryGetValues(InferKitHeaders.InferenceHeaderContentLength, out var values))
        {
            return (JsonDocument.Parse(body), []);
        }

        int length = int.Parse(values.Single(), System.Globalization.CultureInfo.InvariantCulture);
        return (JsonDocument.Parse(body.AsMemory(0, length)), body[length..]);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
