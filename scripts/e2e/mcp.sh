#!/usr/bin/env bash
# Kiln's MCP server with outside clients against `kiln serve`: the official MCP Python SDK
# (mcp_client.py) in its default mode (server/discover, protocol 2026-07-28) and pinned to the
# initialize handshake (2025-11-25): it lists tools, searches and reads a real project, edits a file
# and sees the change on disk, gets isError for a path outside the project, lists and reads
# resources; a key without shell:run does not see run_command. Then curl: GET /mcp is 405, a
# browser session and another origin are refused, a batch is -32600.
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
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
  > "$OUT/mcp-serve.out" 2> "$OUT/mcp-serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null' EXIT
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
for _ in $(seq 1 100); do
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

echo "mcp e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
