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

# --- kiln serve ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/app.sh | tee "$OUT/app.txt"
APP_PASSED=$(awk '/^app e2e:/ { print $3 }' "$OUT/app.txt")
APP_FAILED=$(awk '/^app e2e:/ { print $5 }' "$OUT/app.txt")
PASSED=$((PASSED + ${APP_PASSED:-0}))
FAILED=$((FAILED + ${APP_FAILED:-1}))

# --- shell, terminals (python websockets) and ssh (a real sshd) ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/terminal.sh | tee "$OUT/terminal.txt"
P=$(awk '/^terminal e2e:/ { print $3 }' "$OUT/terminal.txt"); F=$(awk '/^terminal e2e:/ { print $5 }' "$OUT/terminal.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- agent runs with a scripted provider; receipts verified with hashlib + cryptography ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/agents.sh | tee "$OUT/agents.txt"
P=$(awk '/^agents e2e:/ { print $3 }' "$OUT/agents.txt"); F=$(awk '/^agents e2e:/ { print $5 }' "$OUT/agents.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- the network-safety attacks replayed: sandbox probes from a job, a terminal and an agent ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/security.sh | tee "$OUT/security.txt"
P=$(awk '/^security e2e:/ { print $3 }' "$OUT/security.txt"); F=$(awk '/^security e2e:/ { print $5 }' "$OUT/security.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- secrets handed to a job, a terminal and an agent, never seen again; a policy stops them ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/secrets.sh | tee "$OUT/secrets.txt"
P=$(awk '/^secrets e2e:/ { print $3 }' "$OUT/secrets.txt"); F=$(awk '/^secrets e2e:/ { print $5 }' "$OUT/secrets.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- approvals: a held agent edit approved, rejected and expired; a held command run on approval ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/approvals.sh | tee "$OUT/approvals.txt"
P=$(awk '/^approvals e2e:/ { print $3 }' "$OUT/approvals.txt"); F=$(awk '/^approvals e2e:/ { print $5 }' "$OUT/approvals.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- Kiln as an MCP server: the official MCP Python SDK in both protocol eras ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/mcp.sh | tee "$OUT/mcp.txt"
P=$(awk '/^mcp e2e:/ { print $3 }' "$OUT/mcp.txt"); F=$(awk '/^mcp e2e:/ { print $5 }' "$OUT/mcp.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- notebooks: made and edited with curl, validated with nbformat; a 4.4 notebook kept whole ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/notebooks.sh | tee "$OUT/notebooks.txt"
P=$(awk '/^notebooks e2e:/ { print $3 }' "$OUT/notebooks.txt"); F=$(awk '/^notebooks e2e:/ { print $5 }' "$OUT/notebooks.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))

# --- opt-in: a real small model served offline (slow: builds llama.cpp on first use) ---
if [ "${KILN_E2E_LOCAL_LLM:-0}" = 1 ]; then
  BIN="$BIN" OUT="$OUT" bash scripts/e2e/local_llm.sh | tee "$OUT/local-llm.txt"
  P=$(awk '/^local-llm e2e:/ { print $3 }' "$OUT/local-llm.txt"); F=$(awk '/^local-llm e2e:/ { print $5 }' "$OUT/local-llm.txt")
  PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))
fi

# --- identity: curl + pyotp, then a real browser ---
BIN="$BIN" OUT="$OUT" bash scripts/e2e/identity.sh | tee "$OUT/identity.txt"
PASSED=$((PASSED + $(awk '/^identity e2e:/ { print $3 }' "$OUT/identity.txt" || echo 0)))
FAILED=$((FAILED + $(awk '/^identity e2e:/ { print $5 }' "$OUT/identity.txt" || echo 1)))
rm -rf "$OUT/screens"
SE_OFFLINE=true python3 scripts/e2e/browser.py "$BIN" "$OUT" | tee "$OUT/browser.txt"
PASSED=$((PASSED + $(awk '/^browser e2e:/ { print $3 }' "$OUT/browser.txt" || echo 0)))
FAILED=$((FAILED + $(awk '/^browser e2e:/ { print $5 }' "$OUT/browser.txt" || echo 1)))
echo "screenshots: $OUT/screens/"

echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
