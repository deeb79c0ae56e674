#!/usr/bin/env bash
# SSE fan-out benchmark: one agent run followed by SUBSCRIBERS (default 5000) SSE clients at once.
#   scripts/bench/sse.sh        (SUBSCRIBERS=5000 TICKS=100 TICK_MS=50 to change the load)
# The scripted provider (scripts/e2e/fake_llm.py ticker) waits while the followers connect, then streams
# TICKS text deltas carrying their send time; every subscriber records when each reached it. Prints
# delivery latency p50/p99/max over live deliveries (deltas sent after every follower was connected),
# how many subscribers got every event, and the server's RSS at peak. The client (sse_fanout.c, plain
# epoll) shares the cores with the server, so its own cost is part of the figures, but small.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
SUBSCRIBERS=${SUBSCRIBERS:-5000}; TICKS=${TICKS:-50}; TICK_MS=${TICK_MS:-100}
# The provider holds its first delta back while the followers connect.
WAIT=${WAIT:-$(( SUBSCRIBERS / 400 + 5 ))}
PROJECTS=$(mktemp -d); mkdir -p "$PROJECTS/demo"; echo hi > "$PROJECTS/demo/README.md"
LLM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" ticker "$TICKS" "$TICK_MS" "$WAIT" & LLM_PID=$!
start_kiln "$ROOT/.build/release/kiln" '["workspace:list","project:write","agent:run","agent:read"]' \
  --projects-root "$PROJECTS" --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model
trap 'stop_kiln; kill $LLM_PID 2>/dev/null; rm -rf "$PROJECTS"' EXIT
# Each API key has its own rate-limit bucket (600 requests at once); enough keys for every subscriber.
KEYS=()
CSRF=$(curl -s -b "$KILN_DATA/jar" "$B/api/auth/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
for _ in $(seq 1 $(( SUBSCRIBERS / 500 + 1 ))); do
  KEYS+=("$(curl -s -b "$KILN_DATA/jar" -H "X-CSRF-Token: $CSRF" -H 'Content-Type: application/json' \
    -d '{"name":"bench","scopes":["agent:read","workspace:list"]}' "$B/api/account/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')")
done
PRJ=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mkdir -p "$ROOT/.build/bench"
cc -O2 -o "$ROOT/.build/bench/sse_fanout" "$ROOT/scripts/bench/sse_fanout.c"
# Start the run with JSON, so it waits for nobody; the provider holds its first delta back WAIT seconds.
RUN=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -H 'Accept: application/json' \
  -d "{\"project_id\":\"$PRJ\",\"prompt\":\"tick\"}" "$B/api/agent/run" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
"$ROOT/.build/bench/sse_fanout" "${B##*:}" "$KILN_PID" "$SUBSCRIBERS" "$TICKS" "$RUN" "${KEYS[@]}"
