#!/usr/bin/env bash
# Sandbox cost: time to the first output byte of POST /api/shell/run `echo hi` and to the first
# prompt byte of a terminal, on two `kiln serve`s in the same run (--sandbox off and --sandbox bwrap),
# alternating, medians of ROUNDS (default 50); beside the bare cost of bubblewrap on this machine.
#   scripts/bench/sandbox.sh        (ROUNDS=100 for more)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
. "$ROOT/scripts/lib/deps.sh"
ensure_packages bubblewrap
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check websockets==17.4
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
PROJECTS=$(mktemp -d "$ROOT/.build/bench-sandbox.XXXXXX")
mkdir -p "$PROJECTS/off" "$PROJECTS/bwrap"
SCOPES='["workspace:list","project:write","shell:run","pty:open"]'
declare -A BASE KEYS PRJ PIDS DATAS
for mode in off bwrap; do
  start_kiln "$ROOT/.build/release/kiln" "$SCOPES" --sandbox "$mode" --projects-root "$PROJECTS"
  BASE[$mode]=$B; KEYS[$mode]=$KEY; PIDS[$mode]=$KILN_PID; DATAS[$mode]=$KILN_DATA
  PRJ[$mode]=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/$mode\"}" "$B/api/project/load" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
done
trap 'for m in off bwrap; do KILN_PID=${PIDS[$m]} KILN_DATA=${DATAS[$m]} stop_kiln; done; rm -rf "$PROJECTS"' EXIT
"$VENV/bin/python" "$ROOT/scripts/bench/sandbox_bench.py" "${ROUNDS:-50}" \
  "${BASE[off]}" "${KEYS[off]}" "${PRJ[off]}" "${BASE[bwrap]}" "${KEYS[bwrap]}" "${PRJ[bwrap]}"
