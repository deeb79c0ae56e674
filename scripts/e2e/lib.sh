# Shared by the e2e scripts: result counting, assertions, free ports, readiness waits.
PASSED=0; FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
# check NAME COMMAND...: passes when the command succeeds.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
# expect NAME WANT GOT
expect() { local name=$1 want=$2 got=$3; if [ "$got" = "$want" ]; then pass "$name"; else fail "$name (want $want, got $got)"; fi; }
# jget EXPR: a Python expression over the JSON document on stdin (bound to d).
jget() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
# setup_token (and start_kiln) come from scripts/lib/kiln_server.sh.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/kiln_server.sh"
# setup_owner SERVE_OUT BASE EMAIL PASSWORD: redeems the one-time setup link `kiln serve` printed.
setup_owner() {
  local t; t=$(setup_token "$1")
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"token\":\"$t\",\"email\":\"$3\",\"name\":\"Owner\",\"password\":\"$4\"}" "$2/auth/setup"
}
# login_csrf BASE EMAIL PASSWORD JAR: signs in (the session cookie goes to JAR) and prints the CSRF token.
login_csrf() {
  curl -s -c "$4" -H 'Content-Type: application/json' -d "{\"email\":\"$2\",\"password\":\"$3\"}" "$1/auth/login" \
    | jget 'd["csrf_token"]'
}
# store_sql DATA_DIR SQL: runs SQL on the store of DATA_DIR's kiln (its SQLite file, or, when BIN is
# the PostgreSQL wrapper folder, scripts/e2e/pg, the database it gave that data dir) and prints the
# rows, one per line, columns separated by a tab.
store_sql() {
  if [ -x "$BIN/store-sql" ]; then "$BIN/store-sql" "$1" "$2"; return; fi
  python3 -c 'import sqlite3, sys
d = sqlite3.connect(sys.argv[1])
for r in d.execute(sys.argv[2]).fetchall(): print("\t".join("" if v is None else str(v) for v in r))
d.commit()' "$1/kiln.db" "$2"
}
# on_sqlite: true unless the suite runs against PostgreSQL (scripts/e2e/pg).
on_sqlite() { [ ! -x "$BIN/store-sql" ]; }
