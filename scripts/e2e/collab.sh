#!/usr/bin/env bash
# Collab with outside clients against `kiln serve`: two people in two python `requests` sessions
# (collab.py): an invitation by mail (outbox), registration through it, an agent run (scripted model,
# fake_llm.py mode edit) reviewed with live notifications on SSE, @mentions, the activity feed and its
# resumable stream, share links opened with no cookies, and who may do what.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PW='a long enough password'
WORK=$OUT/collab
rm -rf "$WORK"; mkdir -p "$WORK/projects/app/src"
echo 'answer = 41' > "$WORK/projects/app/src/app.txt"

LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" edit & LLM_PID=$!
PORT=$(free_port)
B=http://127.0.0.1:$PORT
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
  --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model > "$OUT/collab-serve.out" 2> "$OUT/collab-serve.log" &
PID=$!
trap 'kill $PID $LLM_PID 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; echo "collab e2e: 0 passed, 1 failed"; exit 1; }
setup_owner "$OUT/collab-serve.out" "$B" owner@example.com "$PW"
python3 "$ROOT/scripts/e2e/collab.py" "$B" "$WORK/data" "$WORK/projects/app" owner@example.com "$PW"
