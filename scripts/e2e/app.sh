#!/usr/bin/env bash
# End-to-end checks of `kiln serve` with outside clients: curl probes, promtool on /metrics, the
# OpenAPI document (openapi-spec-validator, and `kiln routes` agreeing with it), the one-time setup
# link, schemathesis against the live server, and a clean exit on SIGTERM.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}

DATA=$(mktemp -d)
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
"$BIN/kiln" serve --port "$PORT" --data-dir "$DATA" > "$OUT/kiln-serve.out" 2> "$OUT/kiln-serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
wait_http "$BASE/healthz"

check "serve prints where it listens" grep -q "listening on $BASE" "$OUT/kiln-serve.out"
check "serve prints a one-time setup URL" grep -qE "$BASE/setup\?token=kst_[A-Za-z0-9]{40}" "$OUT/kiln-serve.out"
check "GET /healthz" test "$(curl -s "$BASE/healthz")" = '{"status":"ok"}'
check "GET /readyz is 200" test "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz")" = 200
check "HEAD /healthz has no body" test "$(curl -s -I "$BASE/healthz" | grep -ci '^content-length: 15')" = 1
check "every response has X-Request-Id" sh -c "curl -s -D - -o /dev/null '$BASE/api/nope' | grep -qi '^x-request-id: req_'"
check "unknown API path: 404 in the shared error shape" sh -c "curl -s '$BASE/api/nope' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"error\"][\"code\"]==\"not_found\" and d[\"request_id\"].startswith(\"req_\")'"
check "web UI at /" sh -c "curl -s '$BASE/' | grep -q '<title>Kiln</title>'"

curl -s "$BASE/metrics" > "$OUT/metrics.txt"
if command -v promtool >/dev/null; then
  check "promtool check metrics" sh -c "promtool check metrics < '$OUT/metrics.txt'"
else
  echo "--   promtool not installed; skipped (apt-get install -y prometheus)"
fi
check "metrics have request counts" grep -q '^kiln_http_requests_total{method="GET",route="/healthz",status="200"}' "$OUT/metrics.txt"

curl -s "$BASE/api/openapi.json" > "$OUT/openapi.json"
check "OpenAPI document is valid (openapi-spec-validator)" python3 -c "
from openapi_spec_validator import validate
import json; validate(json.load(open('$OUT/openapi.json')))"
ROUTES=$("$BIN/kiln" routes | tail -1 | awk '{print $1}')
OPS=$(python3 -c "import json; d=json.load(open('$OUT/openapi.json')); print(sum(len(v) for v in d['paths'].values()))")
check "kiln routes count ($ROUTES) equals OpenAPI operations ($OPS)" test "$ROUTES" = "$OPS"

TOKEN=$(setup_token "$OUT/kiln-serve.out")
CODE=$(curl -s -o "$OUT/setup.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"token\":\"$TOKEN\",\"email\":\"owner@example.com\",\"name\":\"Owner\",\"password\":\"a long enough password\"}" "$BASE/auth/setup")
check "setup link creates the owner (201)" test "$CODE" = 201
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"token\":\"$TOKEN\",\"email\":\"again@example.com\",\"password\":\"a long enough password\"}" "$BASE/auth/setup")
check "setup link works only once (400)" test "$CODE" = 400

if schemathesis run "$BASE/api/openapi.json" -c all --exclude-checks positive_data_acceptance -n 50 \
     --request-timeout 10 > "$OUT/schemathesis.txt" 2>&1; then
  pass "schemathesis against the live server ($(grep -oE '[0-9]+ generated, [0-9]+ passed' "$OUT/schemathesis.txt"))"
else
  tail -40 "$OUT/schemathesis.txt"; fail "schemathesis against the live server"
fi

kill -TERM $PID
for _ in $(seq 1 300); do kill -0 $PID 2>/dev/null || break; sleep 0.1; done
wait $PID; RC=$?
check "SIGTERM: graceful exit 0" test "$RC" = 0

echo "app e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
