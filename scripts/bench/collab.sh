#!/usr/bin/env bash
# Collab notification fan-out on a release build, one run (issue 26, acceptance 4):
# SUBSCRIBERS (2000) notification streams held by USERS (100) members, while the owner makes RATE
# (200) activity events a second for DURATION (30): review comments, each mentioning the next member,
# so each is a feed item and a notification pushed to that member's streams. Prints delivery latency
# (send → arrival on a stream) p50/p90/p99/max against the goal p99 < 200 ms, and the server's peak
# RSS against < 200 MiB. The client (collab_bench.py, asyncio) shares the two cores with the server.
#   scripts/bench/collab.sh        (USERS=100 SUBSCRIBERS=2000 RATE=200 DURATION=30)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/e2e/requirements.txt"
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d)
mkdir -p "$WORK/projects/site"; echo '# site' > "$WORK/projects/site/README.md"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
# 127.0.0.1 is trusted as a proxy so each simulated person signs in from an address of their own.
"$ROOT/.build/release/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
  --log-level warn --rate-limit 1000000 --trusted-proxy 127.0.0.1/32 > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 600); do curl -s -o /dev/null "$B/healthz" && break; sleep 0.1; done
. "$ROOT/scripts/lib/kiln_server.sh"
TOKEN=$(setup_token "$WORK/serve.out")
curl -s -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"token\":\"$TOKEN\",\"email\":\"owner@example.com\",\"password\":\"benchmark password\"}" "$B/auth/setup"
"$VENV/bin/python" "$ROOT/scripts/bench/collab_bench.py" "$B" "$PID" owner@example.com "benchmark password" \
  "$WORK/projects/site" "${USERS:-100}" "${SUBSCRIBERS:-2000}" "${RATE:-200}" "${DURATION:-30}"
