// Getting a PlatformAccessToken from the local access-token-agent in .NET (6 or later).
// The agent speaks HTTP/1.1 over a Unix socket; HttpClient reaches it through
// SocketsHttpHandler.ConnectCallback. The token goes into the PlatformAccessToken
// header as is, without "Bearer ".
using System;
using System.IO;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Serialization;

var socketPath = Environment.GetEnvironmentVariable("ACCESS_TOKEN_AGENT_SOCKET")
    ?? "/run/access-token-agent/agent.sock";
// Create the agent's HttpClient once: it keeps its connection alive.
var agent = new HttpClient(new SocketsHttpHandler
{
    // The agent closes connections idle for 60 s; let the pool drop them first.
    PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
    ConnectCallback = async (_, cancel) =>
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancel);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    },
}) { BaseAddress = new Uri("http://access-token-agent") };

// In a Kubernetes pod the agent needs the pod's projected service-account token
// (deploy/kubernetes/app-example.yaml): read it for every request, as the
// kubelet renews the file before it expires.
const string KubernetesTokenFile = "/var/run/secrets/access-token-agent/token";
using var ask = new HttpRequestMessage(HttpMethod.Get, "/v1/token?issuer=ttd&app=my-app");
if (File.Exists(KubernetesTokenFile))
{
    var serviceAccount = (await File.ReadAllTextAsync(KubernetesTokenFile)).Trim();
    ask.Headers.Authorization = new AuthenticationHeaderValue("Bearer", serviceAccount);
}
using var answer = await agent.SendAsync(ask);
if (!answer.IsSuccessStatusCode)
{
    // A problem document (RFC 9457): its type names the failure, its detail says what to do.
    throw new InvalidOperationException(await answer.Content.ReadAsStringAsync());
}
var issued = await answer.Content.ReadFromJsonAsync<IssuedToken>();

var platform = new HttpClient { BaseAddress = new Uri("https://platform.tt02.altinn.no") };
var request = new HttpRequestMessage(HttpMethod.Get, "/register/api/v1/parties/50001337");
request.Headers.Add("PlatformAccessToken", issued!.Token);
var response = await platform.SendAsync(request);
Console.WriteLine(response.StatusCode);

record IssuedToken(
    string Token,
    string Kid,
    string Issuer,
    string App,
    [property: JsonPropertyName("expires_at")] long ExpiresAt);
