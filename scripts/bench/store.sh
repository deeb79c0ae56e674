#!/usr/bin/env bash
# The store on SQLite and on PostgreSQL, in one run, on a throwaway PostgreSQL 15 (scripts/lib/postgres.sh,
# TLS and SCRAM as in the tests):
#   1. the driver against pgbench: `SELECT 1` round trips on one connection over TLS, prepared
#      (goal: Kiln's mean latency within 1.3x pgbench's);
#   2. event appends per second through the event bus (what each agent event costs), one writer,
#      SQLite vs PostgreSQL;
#   3. an authenticated JSON route (GET /api/workspaces with an API key) under wrk: SQLite, PostgreSQL
#      with one instance, PostgreSQL with two instances (wrk on both at once; the sum).
#   scripts/bench/store.sh        (SECONDS_EACH=10 CONNS=32)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/postgres.sh
. scripts/lib/kiln_server.sh
ensure_packages wrk postgresql-contrib >/dev/null 2>&1 || ensure_packages wrk
S=${SECONDS_EACH:-10}; CONNS=${CONNS:-32}
swift build -c release --product kiln >/dev/null
KILN=$ROOT/.build/release/kiln
start_test_postgres
trap 'stop_kiln 2>/dev/null; kill ${B2PID:-} 2>/dev/null; stop_test_postgres' EXIT

echo "== 1. SELECT 1 round trips, one connection, TLS, prepared ($S s each)"
printf 'SELECT 1;\n' > .build/pg/select1.sql
PGB=$(pgbench -n -c 1 -j 1 -T "$S" -M prepared -f .build/pg/select1.sql "$KILN_TEST_PG_URL" 2>/dev/null)
PGB_MS=$(echo "$PGB" | awk -F'= ' '/latency average/ { print $2 + 0 }')
PGB_TPS=$(echo "$PGB" | awk -F'= ' '/^tps/ { print $2 + 0 }')
OURS=$("$KILN" store-bench select1 "$KILN_TEST_PG_URL" "$S")
OURS_MS=$(echo "$OURS" | sed -n 's/.*mean \([0-9.]*\) ms.*/\1/p')
echo "pgbench   mean $PGB_MS ms ($PGB_TPS tps)"
echo "kiln      $OURS"
awk -v k="$OURS_MS" -v p="$PGB_MS" 'BEGIN { r = k / p; printf "ratio kiln/pgbench latency %.2f (goal <= 1.30: %s)\n", r, (r <= 1.3) ? "met" : "NOT met" }'

echo "== 2. event appends, one writer ($S s each)"
"$KILN" store-bench events "$S"
"$KILN" store-bench events "$KILN_TEST_PG_URL" "$S"

echo "== 3. GET /api/workspaces with an API key, wrk -c $CONNS ($S s each)"
route() {  # route LABEL URL...: wrk on each URL at once; prints the summed requests per second
  local label=$1; shift
  local pids=() files=() total=0
  for u in "$@"; do
    local f; f=$(mktemp)
    wrk -t 2 -c "$CONNS" -d "${S}s" -H "$AUTH" "$u/api/workspaces" > "$f" 2>&1 & pids+=($!); files+=("$f")
  done
  wait "${pids[@]}"
  for f in "${files[@]}"; do
    total=$(awk -v t="$total" '/Requests\/sec/ { printf "%.0f", t + $2 }' "$f")
    grep -q "Non-2xx" "$f" && echo "  ($(grep Non-2xx "$f" | xargs))"
    rm -f "$f"
  done
  echo "$label: $total req/s"
}
SCOPES='["workspace:list"]'
start_kiln "$KILN" "$SCOPES" --rate-limit 1000000
route "SQLite, one instance" "$B"
stop_kiln
DB="kiln_bench_$(openssl rand -hex 4)"
psql -q "$KILN_TEST_PG_URL" -c "CREATE DATABASE $DB"
export KILN_DATABASE_URL="${KILN_TEST_PG_URL/\/kiln_test\?//$DB?}"
start_kiln "$KILN" "$SCOPES" --rate-limit 1000000
route "PostgreSQL, one instance" "$B"
P2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KILN" serve --port "$P2" --data-dir "$KILN_DATA" --log-level warn --rate-limit 1000000 > /dev/null 2>&1 & B2PID=$!
for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$P2/healthz" && break; sleep 0.1; done
route "PostgreSQL, two instances (sum)" "$B" "http://127.0.0.1:$P2"
