#!/usr/bin/env bash
# Terminal benchmark: Kiln's PTY over WebSocket beside a plain forkpty + pipe baseline, in one run.
#   scripts/bench/pty.sh     (SIZE_MB=256 ROUNDS=1000 TERMINALS=200 to change the load)
# Prints: throughput of `cat` of a SIZE_MB file to the client, keystroke echo latency p50/p99 over
# ROUNDS round trips, and server RSS with TERMINALS open terminals (each attached once).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check websockets==17.4
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
BENCH=$ROOT/.build/bench/pty
mkdir -p "$BENCH"
SIZE_MB=${SIZE_MB:-256}
[ "$(stat -c %s "$BENCH/data.bin" 2>/dev/null || echo 0)" = $((SIZE_MB << 20)) ] || head -c $((SIZE_MB << 20)) /dev/urandom > "$BENCH/data.bin"
start_kiln "$ROOT/.build/release/kiln" '["pty:open","workspace:list"]'
trap stop_kiln EXIT
"$VENV/bin/python" "$ROOT/scripts/bench/pty_bench.py" "$B" "$KEY" "$BENCH/data.bin" "$KILN_PID" "${ROUNDS:-1000}" "${TERMINALS:-200}"
