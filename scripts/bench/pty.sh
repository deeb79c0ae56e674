#!/usr/bin/env bash
# Terminal benchmark: Kiln's PTY over WebSocket beside a plain forkpty + pipe baseline, in one run.
#   scripts/bench/pty.sh     (SIZE_MB=256 ROUNDS=1000 TERMINALS=200 to change the load)
# Prints: throughput of `cat` of a SIZE_MB file to the client (a C client, pty_throughput.c, for Kiln
# and the baseline alike, so the client is never the limit; RUNS alternating runs each, default 3,
# medians), keystroke echo latency p50/p99 over ROUNDS round trips, and server RSS with TERMINALS
# open terminals (each attached once).
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
cc -O2 -Wall -o "$BENCH/pty_throughput" "$ROOT/scripts/bench/pty_throughput.c" -lutil
start_kiln "$ROOT/.build/release/kiln" '["pty:open","workspace:list"]'
trap stop_kiln EXIT

echo "data: $SIZE_MB MiB"
: > "$BENCH/kiln.runs"; : > "$BENCH/base.runs"
for run in $(seq 1 "${RUNS:-3}"); do
  id=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d '{"cols":120,"rows":40}' "$B/api/pty/spawn" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  read -r k _ ks kf < <("$BENCH/pty_throughput" kiln "${B##*:}" "/api/pty/$id/stream" "$KEY" "$BENCH/data.bin")
  read -r b _ bs br < <("$BENCH/pty_throughput" baseline "$BENCH/data.bin")
  curl -s -o /dev/null -X DELETE -H "$AUTH" "$B/api/pty/$id"
  echo "$k" >> "$BENCH/kiln.runs"; echo "$b" >> "$BENCH/base.runs"
  echo "  run $run: kiln $k MB/s ($ks s, $kf frames), baseline $b MB/s ($bs s, $br reads)"
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
K=$(median < "$BENCH/kiln.runs"); BASE=$(median < "$BENCH/base.runs")
echo "throughput  kiln (PTY → WebSocket → C client): $K MB/s; baseline (forkpty → read, C): $BASE MB/s; ratio $(awk -v a="$K" -v b="$BASE" 'BEGIN { printf "%.2f", a / b }') (goal >= 200 MB/s: $(awk -v a="$K" 'BEGIN { print (a >= 200) ? "met" : "NOT met" }'))"
"$VENV/bin/python" "$ROOT/scripts/bench/pty_bench.py" "$B" "$KEY" "$KILN_PID" "${ROUNDS:-1000}" "${TERMINALS:-200}"
