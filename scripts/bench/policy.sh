#!/usr/bin/env bash
# Policy decision cost: `kiln policy bench` on a release build — a 200-rule policy (regexes, globs,
# roles, actor kinds), 100,000 evaluations timed one by one, and decisions as the services make them
# (cached policy + the caller's role read from SQLite: what each agent tool call, job and terminal adds).
#   scripts/bench/policy.sh        (RULES=200 CALLS=100000)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
OUT=$("$ROOT/.build/release/kiln" policy bench --rules "${RULES:-200}" --calls "${CALLS:-100000}" --data-dir "$DATA")
echo "$OUT"
EVAL=$(echo "$OUT" | sed -n 's/^evaluate.*p50 \([0-9.]*\) µs.*/\1/p')
DECIDE=$(echo "$OUT" | sed -n 's/^decision.*p50 \([0-9.]*\) µs.*/\1/p')
echo "goal: evaluation < 20 µs at p50: $EVAL µs ($(awk -v v="$EVAL" 'BEGIN { print (v < 20) ? "met" : "NOT met" }'))"
echo "goal: a tool call's added cost with policies on vs off < 1 ms: $DECIDE µs per decision ($(awk -v v="$DECIDE" 'BEGIN { print (v < 1000) ? "met" : "NOT met" }'))"
