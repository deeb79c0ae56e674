#!/usr/bin/env bash
# Agent runs, budget and receipts end to end with outside clients against `kiln serve`:
#   - a scripted OpenAI-compatible provider (fake_llm.py, Python's http.server) behind --llm-base-url;
#   - curl: runs streamed over SSE, a run started with Accept: application/json and followed, rollback,
#     the ledger;
#   - receipts_check.py (hashlib + cryptography, nothing from Kiln) verifies every hash, link and
#     signature, then detects a receipt altered in the database (store_sql: sqlite3 or psql);
#   - `kiln receipts verify` agrees, offline.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kiln_server.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

PROJECTS=$(mktemp -d)
mkdir -p "$PROJECTS/demo" && printf 'hello\nworld\n' > "$PROJECTS/demo/README.md"
LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" agent & LLM_PID=$!
start_kiln "$BIN/kiln" '["workspace:list","project:read","project:write","agent:run","agent:read","budget:read","receipts:read"]' \
  --projects-root "$PROJECTS" --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model
trap 'stop_kiln; kill $LLM_PID 2>/dev/null; rm -rf "$PROJECTS"' EXIT
J='Content-Type: application/json'
PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | jget 'd["id"]')

curl -sN -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"take notes\"}" "$B/api/agent/run" > "$OUT/agent-run.txt"
check "agent run streams run.started … run.completed with gap-free ids" python3 - "$OUT/agent-run.txt" <<'PY'
import json, sys
blocks = [b for b in open(sys.argv[1]).read().split("\n\n") if "data: " in b]
ids = [int(next(l[4:] for l in b.splitlines() if l.startswith("id: "))) for b in blocks]
types = [next(l[7:] for l in b.splitlines() if l.startswith("event: ")) for b in blocks]
assert ids == list(range(1, len(ids) + 1)), ids
assert types[0] == "run.started" and types[-1] == "run.completed", types
for t in ("message.delta", "message", "tool.call", "tool.result", "file.changed", "usage"):
    assert t in types, t
PY
check "the agent's file is in the project" test "$(cat "$PROJECTS/demo/notes/agent.txt")" = "written by the agent"
RUN1=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$OUT/agent-run.txt" | cut -d'"' -f4)
RUN2=$(curl -s -H "$AUTH" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"again\"}" "$B/api/agent/run" | jget 'd["run_id"]')
check "follow replays a JSON-started run to its end" sh -c "curl -sN -H '$AUTH' '$B/api/agent/follow?run_id=$RUN2' | grep -q '^event: run.completed'"
expect "follow from the middle starts after the cursor" "id: 4" "$(curl -sN -H "$AUTH" "$B/api/agent/follow?run_id=$RUN1&cursor=3" | grep -m1 '^id: ')"
echo "edited by hand" > "$PROJECTS/demo/notes/agent.txt"
expect "rollback after a hand edit conflicts (409)" 409 "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" -H "$J" -d "{\"run_id\":\"$RUN1\"}" "$B/api/agent/rollback")"
expect "forced rollback" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" -H "$J" -d "{\"run_id\":\"$RUN1\",\"force\":true}" "$B/api/agent/rollback")"
check "rollback deleted the file the run created" test ! -e "$PROJECTS/demo/notes/agent.txt"
RUN3=$(curl -s -H "$AUTH" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"third\"}" "$B/api/agent/run" | jget 'd["run_id"]')
curl -sN -H "$AUTH" "$B/api/agent/follow?run_id=$RUN3" > /dev/null
sleep 0.5
IN=$(curl -s -H "$AUTH" "$B/api/agent/history?ws_id=$WS" | jget 'sum(r["input_tokens"] for r in d["items"])')
expect "the ledger's input tokens equal the runs' sum" "$IN" "$(curl -s -H "$AUTH" "$B/api/budget/ledger?ws_id=$WS" | jget 'd["totals"]["input_tokens"]')"

# Receipts, verified with hashlib + cryptography only.
expect "three receipts in the chain" 3 "$(curl -s -H "$AUTH" "$B/api/receipts/chain-head?ws_id=$WS" | jget 'd["seq"]')"
check "receipts_check.py verifies every hash, link and signature" python3 "$ROOT/scripts/e2e/receipts_check.py" "$B" "$KEY" "$WS"
check "kiln receipts verify (offline) agrees" "$BIN/kiln" receipts verify --ws "$WS" --data-dir "$KILN_DATA"
store_sql "$KILN_DATA" "UPDATE receipts SET body = replace(body, '\"status\":\"completed\"', '\"status\":\"failed\"') WHERE ws_id = '$WS' AND seq = 2"
check "receipts_check.py detects the receipt altered in the database (seq 2)" python3 "$ROOT/scripts/e2e/receipts_check.py" "$B" "$KEY" "$WS" --expect-break 2
expect "the server's verify reports it too" 2 "$(curl -s -X POST -H "$AUTH" "$B/api/receipts/$RUN3/verify" | jget 'd["first_break"]["seq"]')"
check "kiln receipts verify exits 1 on the break" sh -c "! '$BIN/kiln' receipts verify --ws '$WS' --data-dir '$KILN_DATA' > /dev/null"

echo "agents e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
