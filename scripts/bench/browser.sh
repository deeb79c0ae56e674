#!/usr/bin/env bash
# Browser runs on a release build, one run (issue 27, acceptance 4):
#  1. a smoke run's wall time through Kiln (POST /api/browser/run, SSE until browser.completed: a
#     sandboxed Chromium started, the page loaded with every request checked, timings, a full-page
#     screenshot stored) against the same page through `chromium --headless --screenshot` on the
#     command line, alternating, ROUNDS (10) each: medians and the ratio (goal: within 1.5×);
#  2. Kiln's own RSS (not Chromium's) sampled while five runs queue and run (goal < 120 MiB).
# The page is scripts/e2e/site/ served by Python on 127.0.0.3.
#   scripts/bench/browser.sh        (ROUNDS=10)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install -y chromium)"; exit 1; }
ROUNDS=${ROUNDS:-10}
WORK=$(mktemp -d)
SITE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.3",0)); print(s.getsockname()[1])')
python3 "$ROOT/scripts/e2e/site_server.py" 127.0.0.3 "$SITE_PORT" & SITE_PID=$!
SITE=http://127.0.0.3:$SITE_PORT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
"$ROOT/.build/release/kiln" serve --port "$PORT" --data-dir "$WORK/data" --log-level warn \
  --allow-private-network 127.0.0.3/32 > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID $SITE_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 600); do curl -s -o /dev/null "$B/healthz" && curl -s -o /dev/null "$SITE/" && break; sleep 0.1; done
J='Content-Type: application/json'
. "$ROOT/scripts/lib/kiln_server.sh"
TOKEN=$(setup_token "$WORK/serve.out")
curl -s -o /dev/null -H "$J" -d "{\"token\":\"$TOKEN\",\"email\":\"bench@example.com\",\"password\":\"benchmark password\"}" "$B/auth/setup"
CSRF=$(curl -s -c "$WORK/jar" -H "$J" -d '{"email":"bench@example.com","password":"benchmark password"}' "$B/auth/login" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
S=(-b "$WORK/jar" -H "X-CSRF-Token: $CSRF" -H "$J")
WS=$(curl -s -b "$WORK/jar" "$B/api/workspaces" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
curl -s -o /dev/null "${S[@]}" -X PUT -d "{\"ws_id\":\"$WS\",\"entries\":[{\"pattern\":\"$SITE\"}]}" "$B/api/browser/allowlist"
BODY="{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/about.html\"}"
# A first run of each, not counted (the page cache of the Chromium binary warms up).
curl -sN "${S[@]}" -d "$BODY" "$B/api/browser/run" > /dev/null
chromium --headless --no-sandbox --disable-gpu --screenshot="$WORK/cli.png" --window-size=1280,800 "$SITE/about.html" >/dev/null 2>&1
now() { python3 -c 'import time; print(time.monotonic())'; }
KILN=(); CLI=()
for _ in $(seq 1 "$ROUNDS"); do
  t0=$(now); curl -sN "${S[@]}" -d "$BODY" "$B/api/browser/run" | grep -q '^event: browser.completed'; t1=$(now)
  KILN+=("$(python3 -c "print(($t1 - $t0) * 1000)")")
  rm -rf "$WORK/cli-profile"
  t0=$(now)
  chromium --headless --no-sandbox --disable-gpu --user-data-dir="$WORK/cli-profile" --screenshot="$WORK/cli.png" \
    --window-size=1280,800 "$SITE/about.html" >/dev/null 2>&1
  t1=$(now)
  CLI+=("$(python3 -c "print(($t1 - $t0) * 1000)")")
done
python3 - "${KILN[*]}" "${CLI[*]}" <<'PY'
import statistics, sys
kiln = [float(x) for x in sys.argv[1].split()]
cli = [float(x) for x in sys.argv[2].split()]
k, c = statistics.median(kiln), statistics.median(cli)
print(f"smoke run, median of {len(kiln)}: Kiln {k:.0f} ms (min {min(kiln):.0f}, max {max(kiln):.0f})  "
      f"chromium --headless --screenshot {c:.0f} ms (min {min(cli):.0f}, max {max(cli):.0f})")
print(f"ratio Kiln / command line: {k / c:.2f} (goal ≤ 1.5)")
PY
# Five queued: Kiln's RSS while they wait and run.
for _ in 1 2 3 4 5; do
  curl -s -o /dev/null "${S[@]}" -H 'Accept: application/json' -d "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/slow\"}" "$B/api/browser/run"
done
PEAK=0
for _ in $(seq 1 400); do
  r=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  [ "$r" -gt "$PEAK" ] && PEAK=$r
  left=$(curl -s -b "$WORK/jar" "$B/api/browser/runs?ws_id=$WS&limit=5" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin)["items"] if r["status"] in ("queued","running")))')
  [ "$left" = 0 ] && break
  sleep 0.05
done
python3 -c "print(f'Kiln RSS while five runs queue and run: peak {$PEAK / 1024:.1f} MiB (goal < 120)')"
