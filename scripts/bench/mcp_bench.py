"""Registry overhead: the same tool (echo) of an external MCP server called directly with JSON-RPC
over HTTP (2026-07-28 headers, a new connection per call as Kiln makes) and through Kiln's
POST /api/mcp (keep-alive to Kiln). Sequential calls; prints p50 and p99 of each and the p50 added.

Usage: mcp_bench.py KILN_URL KEY WS SERVER_URL CALLS
"""
import http.client, json, statistics, sys, time, urllib.parse

KILN, KEY, WS, SERVER, CALLS = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def direct():
    u = urllib.parse.urlsplit(SERVER)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "hi"}, "_meta": META}})
    c = http.client.HTTPConnection(u.hostname, u.port)
    c.request("POST", u.path, body, {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                                     "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"})
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200 and b"hi" in data, (r.status, data[:200])


u = urllib.parse.urlsplit(KILN)
kiln = http.client.HTTPConnection(u.hostname, u.port)


def through_kiln():
    body = json.dumps({"ws_id": WS, "tool": "bench.echo", "arguments": {"text": "hi"}})
    kiln.request("POST", "/api/mcp", body, {"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
    r = kiln.getresponse()
    data = r.read()
    assert r.status == 200 and b"hi" in data, (r.status, data[:200])


def measure(f):
    for _ in range(20):
        f()
    times = []
    for _ in range(CALLS):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


d50, d99 = measure(direct)
k50, k99 = measure(through_kiln)
print(f"external tool directly:      p50 {d50:6.2f} ms  p99 {d99:6.2f} ms  ({CALLS} calls)")
print(f"through POST /api/mcp:       p50 {k50:6.2f} ms  p99 {k99:6.2f} ms")
print(f"added by the registry: p50 {k50 - d50:+.2f} ms (goal < 2 ms)")
