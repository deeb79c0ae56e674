#!/usr/bin/env bash
# MCP with outside clients against `kiln serve`.
# Kiln as a server: the official MCP Python SDK (mcp_client.py) in its default mode (server/discover,
# protocol 2026-07-28) and pinned to the initialize handshake (2025-11-25): it lists tools, searches and
# reads a real project, edits a file and sees the change on disk, gets isError for a path outside the
# project, lists and reads resources; a key without shell:run does not see run_command. Then curl: GET
# /mcp is 405, a browser session and another origin are refused, a batch is -32600.
# Kiln's registry: the same SDK's MCPServer (mcp_test_server.py) over HTTP (behind a bearer token) and
# over stdio (started in the sandbox), registered with curl, refreshed (tools/list over three pages),
# listed with namespaces, invoked through POST /api/mcp; bad arguments, a tool sleeping past the
# timeout, an oversized result and a server dying mid-call are each a clear error; a private address
# is refused unless allowed; the stdio server cannot read the data dir; every call is audited.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J='Content-Type: application/json'
PW='a long enough password'
WORK=$OUT/mcp
rm -rf "$WORK"; mkdir -p "$WORK/projects/calc"
printf 'def answer():\n    return 41\n' > "$WORK/projects/calc/calc.py"
PASSED=0; FAILED=0

PORT=$(free_port)
B=http://127.0.0.1:$PORT
# The stdio test server runs in the sandbox: it needs the venv, the Python it was made from, and the script.
PYBASE=$(python3 -c 'import sys; print(sys.base_prefix)')
VENV=$(python3 -c 'import sys; print(sys.prefix)')
LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" mcp > "$OUT/mcp-fake-llm.log" 2>&1 &
LLM=$!
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
  --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model --allow-private-network 127.0.0.1/32 --sandbox-mount "$VENV" --sandbox-mount "$PYBASE" --sandbox-mount "$ROOT/scripts/e2e" \
  > "$OUT/mcp-serve.out" 2> "$OUT/mcp-serve.log" &
PID=$!
SRV_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/mcp_test_server.py" http "$SRV_PORT" e2e-server-token > "$OUT/mcp-test-server.log" 2>&1 &
SRV=$!
# A server of the previous generation (SDK 1.x: initialize handshake only), in a venv of its own.
LEGACY_VENV=$ROOT/.build/mcp1-venv
[ -x "$LEGACY_VENV/bin/python" ] || python3 -m venv "$LEGACY_VENV"
"$LEGACY_VENV/bin/pip" install -q --disable-pip-version-check mcp==1.26.0
LEGACY_PORT=$(free_port)
"$LEGACY_VENV/bin/python" "$ROOT/scripts/e2e/mcp_legacy_server.py" "$LEGACY_PORT" > "$OUT/mcp-legacy-server.log" 2>&1 &
LEGACY=$!
trap 'kill $PID $SRV $LEGACY $LLM 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

setup_owner "$OUT/mcp-serve.out" "$B" owner@example.com "$PW"
JAR=$WORK/jar
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$JAR")
S=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
WS=$(curl -s -b "$JAR" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s "${S[@]}" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/calc\"}" "$B/api/project/load" | jget 'd["id"]')
# Index it (search and resources read the index), and wait for the rescan to finish.
curl -sN "${S[@]}" -d "{\"project_id\":\"$PRJ\"}" "$B/api/project/rescan" > /dev/null
for _ in $(seq 1 300); do
  [ "$(curl -s -b "$JAR" "$B/api/project/$PRJ" 2>/dev/null | jget 'd.get("index_status", "")' 2>/dev/null)" = indexed ] && break
  sleep 0.1
done
FULL='["workspace:list","project:read","project:write","shell:run","shell:read","agent:run","agent:read","receipts:read"]'
KEY=$(curl -s "${S[@]}" -d "{\"name\":\"mcp\",\"scopes\":$FULL}" "$B/api/account/api-keys" | jget 'd["key"]')
NARROW=$(curl -s "${S[@]}" -d '{"name":"read-only","scopes":["workspace:list","project:read"]}' "$B/api/account/api-keys" | jget 'd["key"]')

for MODE in auto legacy; do
  python3 "$ROOT/scripts/e2e/mcp_client.py" "$B" "$KEY" "$PRJ" "$WORK/projects/calc" "$MODE" "$NARROW" > "$WORK/client-$MODE.txt" 2>&1
  cat "$WORK/client-$MODE.txt" | grep -E '^(ok|FAIL) '
  P=$(awk '/^mcp-client / { print $3 }' "$WORK/client-$MODE.txt"); F=$(awk '/^mcp-client / { print $5 }' "$WORK/client-$MODE.txt")
  PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))
  [ -n "$P" ] || { echo "FAIL the SDK client ($MODE) did not finish:"; tail -20 "$WORK/client-$MODE.txt"; }
done

H="Authorization: Bearer $KEY"
expect "GET /mcp is 405 (no server stream)" 405 "$(code -H "$H" "$B/mcp")"
expect "a browser session is not an API key (401)" 401 "$(code "${S[@]}" -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$B/mcp")"
expect "another origin is refused (403)" 403 "$(code -H "$H" -H "$J" -H 'Origin: https://evil.example' -d '{"jsonrpc":"2.0","id":1,"method":"ping"}' "$B/mcp")"
expect "a batch is -32600" -32600 "$(curl -s -H "$H" -H "$J" -d '[{"jsonrpc":"2.0","id":1,"method":"ping"}]' "$B/mcp" | jget 'd["error"]["code"]')"

# --- The registry ---
A=(-H "$H" -H "$J")
FULLM='["workspace:list","project:read","mcp:read","mcp:manage","mcp:invoke"]'
MKEY=$(curl -s "${S[@]}" -d "{\"name\":\"registry\",\"scopes\":$FULLM}" "$B/api/account/api-keys" | jget 'd["key"]')
M=(-H "Authorization: Bearer $MKEY" -H "$J")
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$SRV_PORT/mcp" && break; sleep 0.1; done
TOKEN=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"tester-token\",\"token\":\"e2e-server-token\"}" "$B/api/mcp/tokens")
TOKEN_ID=$(echo "$TOKEN" | jget 'd["id"]')
check "a token is stored and never shown again" sh -c "echo '$TOKEN' | grep -vq e2e-server-token && curl -s -H 'Authorization: Bearer $MKEY' '$B/api/mcp/tokens?ws_id=$WS' | grep -vq e2e-server-token"
HTTP_ID=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"tester\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:$SRV_PORT/mcp\",\"token_id\":\"$TOKEN_ID\"}" "$B/api/mcp/servers" | jget 'd["id"]')
expect "the same name twice is 409" 409 "$(code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"tester\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:$SRV_PORT/mcp\"}" "$B/api/mcp/servers")"
expect "a bad name is 400" 400 "$(code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"Not OK\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:1/mcp\"}" "$B/api/mcp/servers")"
expect "refresh lists every page of the server's tools (6, two per page)" 6 "$(curl -s "${M[@]}" -X POST "$B/api/mcp/servers/$HTTP_ID/refresh" | jget 'd["tools"]')"
expect "… speaking 2026-07-28 with it" 2026-07-28 "$(curl -s -H "Authorization: Bearer $MKEY" "$B/api/mcp/servers/$HTTP_ID" | jget 'd["protocol_version"]')"
expect "health: it answers" True "$(curl -s -H "Authorization: Bearer $MKEY" "$B/api/mcp/servers/$HTTP_ID/health" | jget 'd["ok"]')"
expect "the catalogue names its tools <server>.<tool> beside kiln.<tool>" "tester.add tester.big tester.crash tester.echo tester.peek tester.slow" \
  "$(curl -s -H "Authorization: Bearer $MKEY" "$B/api/mcp?ws_id=$WS&q=tester" | jget '" ".join(i["name"] for i in d["items"])')"
check "… Kiln's own tools are in it" sh -c "curl -s -H 'Authorization: Bearer $MKEY' '$B/api/mcp?ws_id=$WS' | grep -q '\"kiln.read_file\"'"
expect "invoke: kiln.read_file reads the project through the registry" "1	def answer():" "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"kiln.read_file\",\"arguments\":{\"path\":\"calc.py\",\"end_line\":1}}" "$B/api/mcp" | jget 'd["structured_content"]["output"].strip()')"
expect "invoke: tester.add answers 42 (structured)" 42 "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"tester.add\",\"arguments\":{\"a\":2,\"b\":40}}" "$B/api/mcp" | jget 'd["structured_content"]["result"]')"
# From an agent run (scripted model): the call in its events and its signed receipt.
curl -sN "${S[@]}" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"add them\",\"tools\":[\"tester.add\"]}" "$B/api/agent/run" > "$WORK/agent.sse"
RUN=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$WORK/agent.sse" | cut -d'"' -f4)
check "agent run: the registry tool call is in its events by its namespaced name" grep -q '"tool":"tester.add"' "$WORK/agent.sse"
check "agent run: … with the server's answer" grep -q 'the sum is 42' "$WORK/agent.sse"
sleep 0.5
expect "agent run: … and in its receipt" tester.add "$(curl -s -b "$JAR" "$B/api/receipts/$RUN" | jget '",".join(c["tool"] for c in d["tool_calls"])')"
expect "invoke: arguments failing the schema are 400 naming the path" arguments.a "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"tester.add\",\"arguments\":{\"a\":\"two\",\"b\":40}}" "$B/api/mcp" | jget 'd["error"]["details"]["field"]')"
curl -s -o /dev/null "${M[@]}" -X PATCH -d '{"timeout_s":2}' "$B/api/mcp/servers/$HTTP_ID"
START=$(date +%s)
expect "invoke: a tool sleeping past the server's timeout is 504" 504 "$(code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"tester.slow\",\"arguments\":{\"seconds\":20}}" "$B/api/mcp")"
check "… after the timeout, not the sleep" test $(( $(date +%s) - START )) -lt 10
expect "invoke: an oversized result is 502" 502 "$(code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"tester.big\",\"arguments\":{\"kib\":6000}}" "$B/api/mcp")"
expect "… and the server still answers" "hi" "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"tester.echo\",\"arguments\":{\"text\":\"hi\"}}" "$B/api/mcp" | jget 'd["structured_content"]["result"]')"
for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:$LEGACY_PORT/mcp" && break; sleep 0.1; done
OLD_ID=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"legacy\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:$LEGACY_PORT/mcp\"}" "$B/api/mcp/servers" | jget 'd["id"]')
expect "a server of the previous generation is refreshed over the initialize handshake" 2025-11-25 \
  "$(curl -s "${M[@]}" -X POST "$B/api/mcp/servers/$OLD_ID/refresh" | jget 'd.get("protocol_version")')"
expect "… and its tool answers (in its session)" LOUD "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"legacy.shout\",\"arguments\":{\"text\":\"loud\"}}" "$B/api/mcp" | jget 'd["content"][0]["text"]')"
NOTOK=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"no-token\",\"transport\":\"http\",\"url\":\"http://127.0.0.1:$SRV_PORT/mcp\"}" "$B/api/mcp/servers" | jget 'd["id"]')
expect "without its token the server refuses (502)" 502 "$(code "${M[@]}" -X POST "$B/api/mcp/servers/$NOTOK/refresh")"
PRIV=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"private\",\"transport\":\"http\",\"url\":\"http://10.11.12.13/mcp\"}" "$B/api/mcp/servers" | jget 'd["id"]')
check "a private address is refused unless allowed" sh -c "curl -s -H 'Authorization: Bearer $MKEY' -H '$J' -X POST '$B/api/mcp/servers/$PRIV/refresh' | grep -q 'private or reserved address'"
LOOP=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"loopback2\",\"transport\":\"http\",\"url\":\"http://127.0.0.2:$SRV_PORT/mcp\"}" "$B/api/mcp/servers" | jget 'd["id"]')
check "… also loopback outside the allowed range" sh -c "curl -s -H 'Authorization: Bearer $MKEY' -H '$J' -X POST '$B/api/mcp/servers/$LOOP/refresh' | grep -q 'private or reserved address'"

STDIO_ID=$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"name\":\"local\",\"transport\":\"stdio\",\"command\":\"$VENV/bin/python\",\"args\":[\"$ROOT/scripts/e2e/mcp_test_server.py\",\"stdio\"]}" "$B/api/mcp/servers" | jget 'd["id"]')
expect "stdio: refresh starts it in the sandbox and lists its tools" 6 "$(curl -s "${M[@]}" -X POST "$B/api/mcp/servers/$STDIO_ID/refresh" | jget 'd.get("tools")')"
expect "stdio: the server cannot read the data dir" "cannot read: FileNotFoundError" "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"local.peek\",\"arguments\":{\"path\":\"$WORK/data/kiln.db\"}}" "$B/api/mcp" | jget 'd["structured_content"]["result"]')"
expect "stdio: a server dying mid-call is 502" 502 "$(code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"local.crash\",\"arguments\":{}}" "$B/api/mcp")"
expect "stdio: … and it is started again for the next call" again "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"local.echo\",\"arguments\":{\"text\":\"again\"}}" "$B/api/mcp" | jget 'd["structured_content"]["result"]')"
expect "a disabled server's tools are refused (409)" 409 "$(curl -s -o /dev/null -w '%{http_code}' "${M[@]}" -X PATCH -d '{"enabled":false}' "$B/api/mcp/servers/$STDIO_ID" >/dev/null; code "${M[@]}" -d "{\"ws_id\":\"$WS\",\"tool\":\"local.echo\",\"arguments\":{\"text\":\"x\"}}" "$B/api/mcp")"
AUDITED=$(store_sql "$WORK/data" "SELECT COUNT(*) FROM audit_log WHERE action = 'mcp.tool.called'")
check "every call is audited ($AUDITED mcp.tool.called)" test "$AUDITED" -ge 10
DETAILS=$(store_sql "$WORK/data" "SELECT details FROM audit_log WHERE action = 'mcp.tool.called'")
check "… without the argument values" sh -c '! printf "%s" "$1" | grep -q again' _ "$DETAILS"

echo "mcp e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
