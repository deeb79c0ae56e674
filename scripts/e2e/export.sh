#!/usr/bin/env bash
# Moving a whole install between SQLite and PostgreSQL with `kiln export` and `kiln import`:
# a SQLite install is populated through the API (an owner, an API key, a project, agent runs with a
# scripted provider and their receipts, a secret, a shell job), stopped, exported into a new
# PostgreSQL database and served from there with the same data dir (receipts verify, the secret
# still decrypts in a job), then imported back into a new SQLite file; python's sqlite3 compares the
# original and the round-tripped file table by table, row for row.
# Needs KILN_TEST_PG_URL (scripts/lib/postgres.sh); REAL_BIN (or BIN) holds the real binaries.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kiln_server.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KILN=${REAL_BIN:-$BIN}/kiln
[ -n "${KILN_TEST_PG_URL:-}" ] || { echo "export e2e: 0 passed, 1 failed (needs KILN_TEST_PG_URL)"; exit 1; }
unset KILN_DATABASE_URL

WORK=$(mktemp -d)
DB="kiln_export_$(openssl rand -hex 6)"
psql -q "$KILN_TEST_PG_URL" -c "CREATE DATABASE $DB" > /dev/null
PGURL="${KILN_TEST_PG_URL/\/kiln_test\?//$DB?}"
mkdir -p "$WORK/projects/demo" && printf 'hello\n' > "$WORK/projects/demo/README.md"
LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" agent > /dev/null 2>&1 & LLM_PID=$!
trap 'stop_kiln 2>/dev/null; kill $LLM_PID 2>/dev/null; psql -q "$KILN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
SERVE=(--projects-root "$WORK/projects" --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model)
start_kiln "$KILN" '["workspace:list","project:read","project:write","agent:run","agent:read","receipts:read","secrets:write","secrets:list","shell:run","shell:read"]' "${SERVE[@]}"
J='Content-Type: application/json'
VALUE="s3cr3t-$(openssl rand -hex 8)"
PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/demo\"}" "$B/api/project/load" | jget 'd["id"]')
for p in one two; do
  curl -sN -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"$p\"}" "$B/api/agent/run" > /dev/null
done
curl -s -o /dev/null -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"value\":\"$VALUE\"}" "$B/api/secrets/API_TOKEN"
curl -sN -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"echo populated\"}" "$B/api/shell/run" > /dev/null
expect "the SQLite install has two receipts" 2 "$(curl -s -H "$AUTH" "$B/api/receipts/chain-head?ws_id=$WS" | jget 'd["seq"]')"
DATA=$KILN_DATA
kill "$KILN_PID"; wait "$KILN_PID" 2>/dev/null
python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$DATA/kiln.db" "$WORK/original.db"

"$KILN" export --to "$PGURL" --data-dir "$DATA" > "$OUT/export.txt" 2>&1
check "kiln export copies every table and finds them equal" grep -q "every table compared equal" "$OUT/export.txt"
expect "a second export into the same database is refused" 1 "$("$KILN" export --to "$PGURL" --data-dir "$DATA" > /dev/null 2>&1; echo $?)"

# Straight back into a new SQLite file (nothing served in between).
mkdir -p -m 700 "$WORK/back"
cp "$DATA"/master.key "$DATA"/receipt.key "$WORK/back/"
"$KILN" import --from "$PGURL" --data-dir "$WORK/back" > "$OUT/import.txt" 2>&1
check "kiln import copies every table back and finds them equal" grep -q "every table compared equal" "$OUT/import.txt"
check "the round trip SQLite → PostgreSQL → SQLite gives identical rows, table by table" python3 - "$WORK/original.db" "$WORK/back/kiln.db" <<'PY'
import sqlite3, sys
a, b = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
tables = [r[0] for r in a.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name")]
assert tables == [r[0] for r in b.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name")]
rows = 0
for t in tables:
    cols = [r[1] for r in a.execute(f'PRAGMA table_info("{t}")')]
    q = f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{t}"'
    ra, rb = sorted(map(repr, a.execute(q))), sorted(map(repr, b.execute(q)))
    assert ra == rb, (t, len(ra), len(rb))
    rows += len(ra)
assert rows > 50, rows
print(len(tables), "tables,", rows, "rows")
PY
check "the imported install verifies its receipts (SQLite again)" "$KILN" receipts verify --ws "$WS" --data-dir "$WORK/back"

# The same data dir (its keys) served from PostgreSQL.
rm "$DATA/kiln.db"*
PORT=$(free_port); B=http://127.0.0.1:$PORT
"$KILN" serve --port "$PORT" --data-dir "$DATA" --database-url "$PGURL" --log-level warn "${SERVE[@]}" > "$WORK/pg.out" 2> "$WORK/pg.log" &
KILN_PID=$!
wait_http "$B/healthz" || fail "kiln serves the exported database"
expect "the API key still works on PostgreSQL" "$WS" "$(curl -s -H "$AUTH" "$B/api/workspaces" | jget 'd["items"][0]["id"]')"
check "the receipts still verify (kiln receipts verify on PostgreSQL)" "$KILN" receipts verify --ws "$WS" --data-dir "$DATA" --database-url "$PGURL"
curl -sN -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\",\"secrets\":[\"API_TOKEN\"],\"command\":\"printf %s \\\"\$API_TOKEN\\\" | sha256sum\"}" "$B/api/shell/run" > "$WORK/job.sse"
expect "the secret still decrypts (its hash, seen by a job)" 1 "$(grep -c "$(printf %s "$VALUE" | sha256sum | cut -c1-64)" "$WORK/job.sse")"
kill "$KILN_PID"; wait "$KILN_PID" 2>/dev/null


echo "export e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
