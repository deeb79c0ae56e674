#!/usr/bin/env bash
# MCP costs, measured in one run on a release build:
#  1. Kiln's MCP server: tools/call of `search` through POST /mcp (2026-07-28) against the same search
#     over REST (GET /api/project/search), wrk with 8 connections for DURATION each: requests per
#     second and p99, and their ratio (goal: MCP within 1.3x of REST).
#  2. The registry: a tool of an external MCP server (the SDK's MCPServer over HTTP, mcp_test_server.py)
#     called directly with JSON-RPC vs through POST /api/mcp: p50 and p99 over CALLS sequential calls
#     each (goal: < 2 ms p50 added).
#   scripts/bench/mcp.sh          (DURATION=10s, CALLS=500)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
. "$ROOT/scripts/lib/deps.sh"
ensure_packages wrk
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/e2e/requirements.txt"
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
DURATION=${DURATION:-10s}
CALLS=${CALLS:-500}
WORK=$ROOT/.build/bench/mcp
rm -rf "$WORK"; mkdir -p "$WORK/projects"
# The project: Kiln's own sources.
cp -r "$ROOT/Sources" "$WORK/projects/kiln"
SRV_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/python" "$ROOT/scripts/e2e/mcp_test_server.py" http "$SRV_PORT" > "$WORK/server.log" 2>&1 &
SRV=$!
start_kiln "$ROOT/.build/release/kiln" '["workspace:list","project:read","project:write","mcp:read","mcp:manage","mcp:invoke"]' \
  --projects-root "$WORK/projects" --rate-limit 1000000 --allow-private-network 127.0.0.1/32
trap 'stop_kiln; kill $SRV 2>/dev/null' EXIT
J='Content-Type: application/json'
PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/kiln\"}" "$B/api/project/load" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -o /dev/null -H "$AUTH" "$B/api/project/search?project_id=$PRJ&q=func&limit=1"
echo "project: Kiln's Sources ($(find "$WORK/projects/kiln" -type f | wc -l) files), indexed; wrk -c 8 -d $DURATION"

cat > "$WORK/mcp.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"func","project_id":"$PRJ"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "search"
LUA
# One call each first: both answer the same matches (the MCP tool shows the first 50).
curl -s -H "$AUTH" "$B/api/project/search?project_id=$PRJ&q=func&limit=50" | python3 -c 'import json,sys; print("REST: %d matches" % len(json.load(sys.stdin)["items"]))'
wrk -c 8 -t 2 -d "$DURATION" --latency -s "$WORK/mcp.lua" "$B/mcp" > "$WORK/wrk-mcp.txt"
wrk -c 8 -t 2 -d "$DURATION" --latency -H "$AUTH" "$B/api/project/search?project_id=$PRJ&q=func&limit=50" > "$WORK/wrk-rest.txt"
python3 - "$WORK/wrk-rest.txt" "$WORK/wrk-mcp.txt" <<'PY'
import re, sys
def read(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p99s = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
    p99 = float(p99s.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99s.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, p99, int(errors.group(1)) if errors else 0
rest, mcp = read(sys.argv[1]), read(sys.argv[2])
print(f"REST search:       {rest[0]:9.0f} req/s  p99 {rest[1]:7.2f} ms  (non-2xx {rest[2]})")
print(f"MCP tools/call:    {mcp[0]:9.0f} req/s  p99 {mcp[1]:7.2f} ms  (non-2xx {mcp[2]})")
print(f"ratio REST/MCP req/s {rest[0] / mcp[0]:.2f}, MCP/REST p99 {mcp[1] / rest[1]:.2f} (goal: both <= 1.30)")
PY

# The registry's overhead over calling the external server directly.
SID=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"name\":\"bench\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:$SRV_PORT/mcp\"}" "$B/api/mcp/servers" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -o /dev/null -H "$AUTH" -X POST "$B/api/mcp/servers/$SID/refresh"
"$VENV/bin/python" "$ROOT/scripts/bench/mcp_bench.py" "$B" "$KEY" "$WS" "http://127.0.0.1:$SRV_PORT/mcp" "$CALLS"
