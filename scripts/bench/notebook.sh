#!/usr/bin/env bash
# Notebook costs on a release build, in one run:
#  1. a cell `pass` round trip through Kiln (POST /api/notebook/run, JSON, keep-alive) against the same
#     through jupyter_client directly on a kernel of the same type: p50/p99 over RUNS runs each (goal:
#     Kiln adds < 5 ms p50);
#  2. a cell printing 50 MB streamed to an SSE client: MB/s and the server's peak RSS (goal < 150 MiB).
#   scripts/bench/notebook.sh         (RUNS=200, MB=50)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/e2e/requirements.txt"
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
WORK=$ROOT/.build/bench/notebook
rm -rf "$WORK"; mkdir -p "$WORK/projects/nb"
start_kiln "$ROOT/.build/release/kiln" '["workspace:list","project:read","project:write","notebook:read","notebook:write","notebook:run"]' \
  --projects-root "$WORK/projects" --rate-limit 1000000 --notebook-python "$VENV/bin/python"
trap stop_kiln EXIT
PRJ=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/nb\"}" "$B/api/project/load" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$VENV/bin/python" "$ROOT/scripts/bench/notebook_bench.py" "$B" "$KEY" "$PRJ" "$KILN_PID" "${RUNS:-200}" "${MB:-50}"
