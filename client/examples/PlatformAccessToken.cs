// Getting a PlatformAccessToken from the local access-token-agent in .NET (6 or later).
// The agent speaks HTTP/1.1 over a Unix socket; HttpClient reaches it through
// SocketsHttpHandler.ConnectCallback. The token goes into the PlatformAccessToken
// header as is, without "Bearer ".
using System.Net.Http;
using System.Net.Http.Json;
using System.Net.Sockets;

var socketPath = Environment.GetEnvironmentVariable("ACCESS_TOKEN_AGENT_SOCKET")
    ?? "/run/access-token-agent/agent.sock";
var agent = new HttpClient(new SocketsHttpHandler
{
    ConnectCallback = async (_, cancel) =>
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancel);
        return new NetworkStream(socket, ownsSocket: true);
    },
}) { BaseAddress = new Uri("http://access-token-agent") };

var issued = await agent.GetFromJsonAsync<IssuedToken>("/v1/token?issuer=ttd&app=my-app");

var platform = new HttpClient { BaseAddress = new Uri("https://platform.tt02.altinn.no") };
var request = new HttpRequestMessage(HttpMethod.Get, "/register/api/v1/parties/50001337");
request.Headers.Add("PlatformAccessToken", issued!.token);
var response = await platform.SendAsync(request);
Console.WriteLine(response.StatusCode);

record IssuedToken(string token, string kid, string issuer, string app, long expires_at);
