#!/usr/bin/env bash
# End-to-end checks with outside clients against the real binaries:
#   - kiln-bench's /ws/echo: python `websockets` (text, binary, fragments, 16 MiB, ping, closes)
#     and the Autobahn cases (kosoku), sections 1-7 and 9;
#   - kiln serve: curl probes, promtool on /metrics, the OpenAPI document, schemathesis;
#   - shell/terminals/ssh, agents and receipts, the network-safety attacks (security.sh), identity
#     with pyotp and a headless browser.
# Installs its Python tools into a venv under .build/. Stops everything it started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${BIN:-$ROOT/.build/debug}
VENV=$ROOT/.build/e2e-venv
OUT=$ROOT/.build/e2e
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/e2e/requirements.txt
export PATH="$VENV/bin:$PATH"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT


# --- kiln-bench: WebSocket conformance ---
PORT=$(free_port)
"$BIN/kiln-bench" --host 127.0.0.1 --port "$PORT" > "$OUT/kiln-bench.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PORT/hello" || { echo "kiln-bench did not start"; cat "$OUT/kiln-bench.log"; exit 1; }
[ "$(curl -s "http://127.0.0.1:$PORT/hello")" = "Hello, world!" ] && pass "kiln-bench /hello" || fail "kiln-bench /hello"
if python3 scripts/e2e/ws_check.py "ws://127.0.0.1:$PORT/ws/echo"; then pass "websockets client checks"; else fail "websockets client checks"; fi
rm -rf "$OUT/autobahn"
if python3 scripts/e2e/autobahn.py "ws://127.0.0.1:$PORT/ws/echo" "$OUT/autobahn"; then pass "Autobahn sections 1-7, 9"; else fail "Autobahn sections 1-7, 9"; fi

# suite NAME: runs scripts/e2e/NAME.sh and adds its "NAME e2e: P passed, F failed" line to the totals
# (a script that ends without that line counts as one failure).
suite() {
  BIN="$BIN" OUT="$OUT" bash "scripts/e2e/$1.sh" | tee "$OUT/$1.txt"
  local p f
  p=$(awk -v n="$1" '$1 == n && $2 == "e2e:" { print $3 }' "$OUT/$1.txt")
  f=$(awk -v n="$1" '$1 == n && $2 == "e2e:" { print $5 }' "$OUT/$1.txt")
  PASSED=$((PASSED + ${p:-0})); FAILED=$((FAILED + ${f:-1}))
}

# --- kiln serve ---
suite app

# --- shell, terminals (python websockets) and ssh (a real sshd) ---
suite terminal

# --- agent runs with a scripted provider; receipts verified with hashlib + cryptography ---
suite agents

# --- the network-safety attacks replayed: sandbox probes from a job, a terminal and an agent ---
suite security

# --- secrets handed to a job, a terminal and an agent, never seen again; a policy stops them ---
suite secrets

# --- approvals: a held agent edit approved, rejected and expired; a held command run on approval ---
suite approvals

# --- Kiln as an MCP server: the official MCP Python SDK in both protocol eras ---
suite mcp

# --- notebooks: made and edited with curl, validated with nbformat; a 4.4 notebook kept whole ---
suite notebooks

# --- collab: two people, an invitation, a review told live, the activity feed, share links ---
suite collab

# --- browser runs: smoke, flow and marketing checks of a site Python serves, driven with curl ---
suite browser_runs

# --- opt-in: a real small model served offline (slow: builds llama.cpp on first use) ---
if [ "${KILN_E2E_LOCAL_LLM:-0}" = 1 ]; then
  BIN="$BIN" OUT="$OUT" bash scripts/e2e/local_llm.sh | tee "$OUT/local-llm.txt"
  P=$(awk '/^local-llm e2e:/ { print $3 }' "$OUT/local-llm.txt"); F=$(awk '/^local-llm e2e:/ { print $5 }' "$OUT/local-llm.txt")
  PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))
fi

# --- identity: curl + pyotp, then a real browser ---
suite identity
rm -rf "$OUT/screens"
SE_OFFLINE=true python3 scripts/e2e/browser.py "$BIN" "$OUT" | tee "$OUT/browser.txt"
P=$(awk '/^browser e2e:/ { print $3 }' "$OUT/browser.txt"); F=$(awk '/^browser e2e:/ { print $5 }' "$OUT/browser.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))
echo "screenshots: $OUT/screens/"

# --- PostgreSQL (KILN_TEST_PG_URL: scripts/test.sh starts a throwaway server): the suites again with
# every kiln on a database of its own there (scripts/e2e/pg/kiln), then two instances on one
# database, and a whole install moved SQLite → PostgreSQL → SQLite ---
if [ -n "${KILN_TEST_PG_URL:-}" ]; then
  PGBIN=$ROOT/.build/pg-bin
  mkdir -p "$PGBIN"
  ln -sf "$ROOT/scripts/e2e/pg/kiln" "$PGBIN/kiln"; ln -sf "$ROOT/scripts/e2e/pg/store-sql" "$PGBIN/store-sql"
  ln -sf "$BIN/kiln-bench" "$PGBIN/kiln-bench"
  export REAL_BIN=$BIN
  SQLITE_BIN=$BIN SQLITE_OUT=$OUT
  BIN=$PGBIN OUT=$SQLITE_OUT/pg
  mkdir -p "$OUT"
  echo "== the e2e suites on PostgreSQL"
  for s in app terminal agents security secrets approvals mcp notebooks collab browser_runs identity; do suite "$s"; done
  suite instances
  suite export
  BIN=$SQLITE_BIN OUT=$SQLITE_OUT
fi

echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
