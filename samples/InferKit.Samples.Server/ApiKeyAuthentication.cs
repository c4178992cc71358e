using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace InferKit.Samples.Server;

/// <summary>Options of the sample's API-key scheme: client names and their keys.</summary>
public sealed class ApiKeyAuthenticationOptions : AuthenticationSchemeOptions
{
    /// <summary>The request header that carries the key.</summary>
    public string HeaderName { get; set; } = ApiKeyAuthentication.HeaderName;

    /// <summary>Client name → key. A request whose key matches is authenticated as that client.</summary>
    public IDictionary<string, string> Keys { get; } = new Dictionary<string, string>(StringComparer.Ordinal);
}

/// <summary>
/// A minimal API-key authentication scheme: the client sends its key in the <c>X-Api-Key</c> header and is
/// authenticated under the client name the key is registered for. Keys are compared by their SHA-256 digests in
/// constant time, every key on every request, so neither a key's length nor its client shows in the time taken.
/// </summary>
public sealed class ApiKeyAuthenticationHandler : AuthenticationHandler<ApiKeyAuthenticationOptions>
{
    /// <summary>Creates the handler (called by ASP.NET Core's authentication).</summary>
    public ApiKeyAuthenticationHandler(IOptionsMonitor<ApiKeyAuthenticationOptions> options, ILoggerFactory logger, UrlEncoder encoder)
        : base(options, logger, encoder)
    {
    }

    /// <inheritdoc/>
    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (!Request.Headers.TryGetValue(Options.HeaderName, out var values) || values.Count == 0 || string.IsNullOrEmpty(values[0]))
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        // Compare SHA-256 digests, every key, without stopping at a match: FixedTimeEquals returns at once when the
        // lengths differ, and stopping at the first match would tell which client a key belongs to by how long it took.
        Span<byte> presented = stackalloc byte[SHA256.HashSizeInBytes];
        Span<byte> expected = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(values[0]!), presented);
        string? match = null;
        foreach (var (client, key) in Options.Keys)
        {
            SHA256.HashData(Encoding.UTF8.GetBytes(key), expected);
            if (CryptographicOperations.FixedTimeEquals(presented, expected))
            {
                match ??= client;
            }
        }

        if (match is not null)
        {
            var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, match)], Scheme.Name);
            return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name)));
        }

        return Task.FromResult(AuthenticateResult.Fail("The API key is not valid."));
    }

    /// <inheritdoc/>
    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = ApiKeyAuthentication.SchemeName;
        Response.ContentType = "application/json";
        await Response.WriteAsync($$"""{"error":"Missing or invalid API key: send it in the {{Options.HeaderName}} header."}""").ConfigureAwait(false);
    }
}

/// <summary>Registers the sample's API-key scheme.</summary>
public static class ApiKeyAuthentication
{
    /// <summary>The scheme name.</summary>
    public const string SchemeName = "ApiKey";

    /// <summary>The header that carries the key.</summary>
    public const string HeaderName = "X-Api-Key";

    /// <summary>Adds the API-key scheme as the default authentication scheme, with the given client → key pairs.</summary>
    public static AuthenticationBuilder AddApiKeyAuthentication(this IServiceCollection services, IEnumerable<KeyValuePair<string, string>> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var list = keys.ToList();
        return services.AddAuthentication(SchemeName)
            .AddScheme<ApiKeyAuthenticationOptions, ApiKeyAuthenticationHandler>(SchemeName, o =>
            {
                foreach (var (client, key) in list)
                {
                    o.Keys[client] = key;
                }
            });
    }
}
