// The InferKit sample server: http://localhost:5000 by default (`--urls` to change it).
// See InferKit.Samples.Server.http for requests to send, and SampleServer for the settings.
var app = InferKit.Samples.Server.SampleServer.Build(args);
await app.RunAsync().ConfigureAwait(false);
