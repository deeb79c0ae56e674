#!/usr/bin/env bash
# Opt-in (KILN_E2E_LOCAL_LLM=1): a real agent run against a real small model served offline by
# scripts/local-model.sh (SmolLM2-135M-Instruct via llama-cpp-python). Checks the stream, the stored
# transcript and the ledger. A 135M model rarely uses tools well; the checks are about Kiln's side.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kiln_server.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LLM_PORT=$(free_port)
bash "$ROOT/scripts/local-model.sh" "$LLM_PORT" > "$OUT/local-model.log" 2>&1 & LLM_PID=$!
for _ in $(seq 1 1800); do curl -s -o /dev/null "http://127.0.0.1:$LLM_PORT/v1/models" && break; kill -0 $LLM_PID 2>/dev/null || break; sleep 1; done
PROJECTS=$(mktemp -d); mkdir -p "$PROJECTS/demo"; printf 'def add(a, b):\n    return a + b\n' > "$PROJECTS/demo/calc.py"
start_kiln "$BIN/kiln" '["workspace:list","project:write","agent:run","agent:read","budget:read"]' \
  --projects-root "$PROJECTS" --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model smollm2 --llm-timeout 600
trap 'stop_kiln; kill $LLM_PID 2>/dev/null; pkill -P $LLM_PID 2>/dev/null; rm -rf "$PROJECTS"' EXIT
check "the local model server is up" curl -s -o /dev/null "http://127.0.0.1:$LLM_PORT/v1/models"
PRJ=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | jget 'd["id"]')
curl -sN --max-time 900 -H "$AUTH" -H 'Content-Type: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"Say hello in one short sentence.\",\"max_steps\":2}" "$B/api/agent/run" > "$OUT/local-run.txt"
check "the stream starts with run.started and ends with one terminal event" python3 - "$OUT/local-run.txt" <<'PY'
import sys
types = [l[7:] for l in open(sys.argv[1]).read().splitlines() if l.startswith("event: ")]
assert types[0] == "run.started", types
assert types[-1] in ("run.completed", "run.failed"), types
assert sum(t.startswith("run.") and t != "run.started" for t in types) == 1
assert "usage" in types and "message" in types, types
PY
RUN=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$OUT/local-run.txt" | cut -d'"' -f4)
check "the transcript has the prompt and the model's answer" sh -c "curl -s -H '$AUTH' '$B/api/agent/runs/$RUN' | python3 -c 'import json,sys; d=json.load(sys.stdin); r=[m[\"role\"] for m in d[\"transcript\"]]; assert r[0]==\"user\" and \"assistant\" in r, r'"
check "the ledger booked the run's tokens" sh -c "curl -s -H '$AUTH' '$B/api/budget/ledger?ws_id=$WS' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"totals\"][\"runs\"]==1 and d[\"totals\"][\"input_tokens\"]>0, d'"
echo "local-llm e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
