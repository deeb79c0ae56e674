#!/usr/bin/env bash
# Browser runs with outside clients against `kiln serve`: curl drives POST /api/browser/run against a
# small site Python serves on 127.0.0.3 (the only private address this server allows): smoke (the
# console error, the blocked script, a PNG whose size `file` and the answer agree on), a flow that
# signs up and one whose broken selector fails with a screenshot, marketing at three widths (the
# missing description, the image without alt, the broken link), the cloud metadata address, Kiln's
# own port (an image and a WebSocket) and a redirect off the allowlist blocked; five runs at once with at most two Chromiums
# (counted with ps), and after a cancel and a kill -9 of a browser, no Chromium and no profile left.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J='Content-Type: application/json'
PW='a long enough password'
WORK=$OUT/browser_runs
rm -rf "$WORK"; mkdir -p "$WORK"
PASSED=0; FAILED=0
done_() { echo "browser_runs e2e: $PASSED passed, $FAILED failed"; exit $(( FAILED > 0 )); }
if ! command -v chromium >/dev/null; then fail "chromium is installed (apt-get install -y chromium)"; done_; fi

SITE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.3",0)); print(s.getsockname()[1])')
python3 "$ROOT/scripts/e2e/site_server.py" 127.0.0.3 "$SITE_PORT" & SITE_PID=$!
SITE=http://127.0.0.3:$SITE_PORT
PORT=$(free_port)
B=http://127.0.0.1:$PORT
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --allow-private-network 127.0.0.3/32 \
  > "$OUT/browser_runs-serve.out" 2> "$OUT/browser_runs-serve.log" &
PID=$!
trap 'kill $PID $SITE_PID 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { fail "kiln serve started"; done_; }
wait_http "$SITE/" || { fail "the site started"; done_; }
setup_owner "$OUT/browser_runs-serve.out" "$B" owner@example.com "$PW"
JAR=$WORK/jar
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$JAR")
S=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
WS=$(curl -s -b "$JAR" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

expect "the allowlist takes the site's origin" 200 "$(code "${S[@]}" -X PUT \
  -d "{\"ws_id\":\"$WS\",\"entries\":[{\"pattern\":\"$SITE\",\"note\":\"the e2e site\"}]}" "$B/api/browser/allowlist")"
expect "a URL off the allowlist is refused before any browser starts (400)" 400 \
  "$(code "${S[@]}" -d "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"https://example.com/\"}" "$B/api/browser/run")"

# run NAME BODY: streams a run with curl (SSE) into NAME.sse; prints the browser.completed summary.
run() {
  curl -sN "${S[@]}" -d "$2" "$B/api/browser/run" > "$WORK/$1.sse"
  python3 - "$WORK/$1.sse" > "$WORK/$1.json" <<'PY'
import json, sys
last = None
for block in open(sys.argv[1]).read().split("\n\n"):
    lines = block.split("\n")
    if "event: browser.completed" in lines:
        last = json.loads(next(l[6:] for l in lines if l.startswith("data: ")))
print(json.dumps(last["summary"] if last else {}))
PY
}
j() { jget "$1" < "$WORK/$2.json"; }

# Smoke.
run smoke "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/\"}"
check "smoke: streamed started, console, request_failed, screenshot, completed" sh -c \
  "for e in started console request_failed screenshot completed; do grep -q \"^event: browser.\$e\" '$WORK/smoke.sse' || exit 1; done"
expect "smoke: passed, HTTP 200, the title" "passed 200 Kiln e2e site" "$(j 'd["status"], d["http_status"], d["title"]' smoke | tr -d "(),'" )"
expect "smoke: the console error is reported" True "$(j 'any("the home page logs an error" in c["text"] for c in d["console_errors"])' smoke)"
expect "smoke: the script from another origin is blocked and reported" True \
  "$(j 'any(b["url"] == "https://tracker.not-allowed.example/t.js" for b in d["blocked_requests"])' smoke)"
RUN=$(curl -s -b "$JAR" "$B/api/browser/runs?ws_id=$WS" | jget 'd["items"][0]["id"]')
SHOT=$(j 'd["screenshot"]["id"]' smoke)
curl -s -b "$JAR" "$B/api/browser/runs/$RUN/screenshots/$SHOT" -o "$WORK/smoke.png"
W=$(j 'd["screenshot"]["width"]' smoke); H=$(j 'd["screenshot"]["height"]' smoke)
check "smoke: the screenshot is a PNG of ${W}x${H}, as the answer says (file)" sh -c "file '$WORK/smoke.png' | grep -q 'PNG image data, $W x $H'"

# Flows.
STEPS='[{"click":"a[href=\"/signup.html\"]"},{"wait_for":{"selector":"#email"}},{"type":{"selector":"#email","text":"ada@example.com"}},{"click":"#create"},{"expect":{"selector":"#greeting","text":"Welcome aboard"}},{"expect":{"selector":"#who","text":"Signed up as ada@example.com"}},{"screenshot":"welcome"}]'
run flow "{\"ws_id\":\"$WS\",\"kind\":\"flow\",\"url\":\"$SITE/\",\"steps\":$STEPS}"
expect "flow: signs up through the form and expects the welcome text (7 steps)" "passed 7" \
  "$(j 'd["status"], sum(1 for s in d["steps"] if s["ok"])' flow | tr -d "(),'")"
BROKEN='[{"type":{"selector":"#email","text":"bo@example.com"}},{"click":"#no-such-button"},{"click":"#create"}]'
run broken "{\"ws_id\":\"$WS\",\"kind\":\"flow\",\"url\":\"$SITE/signup.html\",\"steps\":$BROKEN}"
expect "flow: a broken selector fails at that step (index 1)" "failed 1" "$(j 'd["status"], d["failed_step"]' broken | tr -d "(),'")"
check "flow: the failed step has a screenshot" sh -c "grep -q '^event: browser.screenshot' '$WORK/broken.sse' && python3 -c \"import json; d=json.load(open('$WORK/broken.json')); assert d['steps'][-1]['screenshot']['width'] > 0\""

# Marketing.
run marketing "{\"ws_id\":\"$WS\",\"kind\":\"marketing\",\"url\":\"$SITE/\"}"
expect "marketing: the missing description is found" False \
  "$(j 'next(c["ok"] for c in d["checks"] if c["check"] == "meta_description")' marketing)"
expect "marketing: the image without alt is found" True "$(j 'any(u.endswith("/logo.png") for u in d["images_without_alt"])' marketing)"
expect "marketing: the broken link is found (and only it)" "['$SITE/missing.html']" "$(j '[l["url"] for l in d["broken_links"]]' marketing)"
expect "marketing: three screenshots, 1440, 834 and 390 wide" "[1440, 834, 390]" "$(j '[s["width"] for s in d["screenshots"]]' marketing)"

# What a page may not reach.
run reach "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/reach.html?kiln=$PORT\"}"
expect "blocked: the cloud metadata address" True \
  "$(j 'any(b["url"].startswith("http://169.254.169.254/") for b in d["blocked_requests"])' reach)"
expect "blocked: Kiln's own port" True "$(j "any(b['url'] == 'http://127.0.0.1:$PORT/healthz' for b in d['blocked_requests'])" reach)"
expect "blocked: a WebSocket to Kiln's port (reported)" True \
  "$(j "any(b['url'] == 'ws://127.0.0.1:$PORT/api/pty/pty_reach/stream' for b in d['blocked_requests'])" reach)"
check "blocked: ... and it never reached Kiln (no such request in its log)" sh -c "! grep -q 'pty_reach\|/api/pty/:pty_id/stream' '$OUT/browser_runs-serve.log'"
run away "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/away\"}"
expect "blocked: a redirect to an origin off the allowlist" True \
  "$(j 'any(b["url"] == "https://elsewhere.not-allowed.example/" for b in d["blocked_requests"])' away)"

# Five at once: at most two browsers (counted by their runs' profiles in ps), all pass, nothing left.
browsers() { ps -eww -o args | grep -o 'kiln-browser/brun_[A-Za-z0-9][A-Za-z0-9]*' | sort -u | wc -l; }
IDS=()
for _ in 1 2 3 4 5; do
  IDS+=("$(curl -s "${S[@]}" -H 'Accept: application/json' -d "{\"ws_id\":\"$WS\",\"kind\":\"smoke\",\"url\":\"$SITE/slow\"}" "$B/api/browser/run" | jget 'd["run_id"]')")
done
( while :; do browsers; sleep 0.03; done ) > "$WORK/browsers.samples" 2>/dev/null & SAMPLER=$!
for _ in $(seq 1 600); do
  left=0
  for id in "${IDS[@]}"; do
    s=$(curl -s -b "$JAR" "$B/api/browser/runs/$id" | jget 'd["status"]')
    case $s in passed|failed|cancelled) ;; *) left=1 ;; esac
  done
  [ $left = 0 ] && break
  sleep 0.1
done
kill $SAMPLER 2>/dev/null; wait $SAMPLER 2>/dev/null
MOST=$(sort -n "$WORK/browsers.samples" | tail -1)
SPANS=$(for id in "${IDS[@]}"; do curl -s -b "$JAR" "$B/api/browser/runs/$id" | jget 'd["started_at"] + " " + d["ended_at"]'; done)
# The most runs whose [started, ended] overlap at one moment, by the server's own times.
OVERLAP=$(echo "$SPANS" | python3 -c '
import sys
ev = []
for l in sys.stdin:
    a, b = l.split()
    ev += [(a, 1), (b, -1)]
n = m = 0
for _, d in sorted(ev, key=lambda e: (e[0], e[1])):
    n += d; m = max(m, n)
print(m)')
expect "five at once: all passed" "passed passed passed passed passed" \
  "$(for id in "${IDS[@]}"; do curl -s -b "$JAR" "$B/api/browser/runs/$id" | jget 'd["status"]'; done | tr '\n' ' ' | sed 's/ $//')"
check "five at once: at most two Chromiums at any time (ps saw at most $MOST)" test "$MOST" -ge 1 -a "$MOST" -le 2
expect "five at once: two ran side by side, never three (by the runs' times)" 2 "$OVERLAP"
# no_profiles: none left (within 5 s: the last goes when the last process of its browser is gone).
no_profiles() {
  for _ in $(seq 1 300); do find "$WORK/data" -path '*kiln-browser/brun_*' | grep -q . || return 0; sleep 0.1; done
  return 1
}
check "five at once: no profile folder left" no_profiles

# Cancel, and kill -9 of a browser: no Chromium left, no profile.
slow() {
  curl -s "${S[@]}" -H 'Accept: application/json' \
    -d "{\"ws_id\":\"$WS\",\"kind\":\"flow\",\"url\":\"$SITE/\",\"steps\":[{\"wait_for\":{\"selector\":\"#never\",\"timeout_ms\":30000}}]}" \
    "$B/api/browser/run" | jget 'd["run_id"]'
}
wait_browser() { for _ in $(seq 1 300); do [ "$(browsers)" -gt 0 ] && return 0; sleep 0.1; done; return 1; }
wait_none() {
  for _ in $(seq 1 300); do [ "$(browsers)" = 0 ] && return 0; sleep 0.1; done
  ps -eww -o pid,ppid,stat,args | grep 'kiln-browser/brun_' | grep -v grep | cut -c1-160 | sed 's/^/     left: /'
  return 1
}
C=$(slow); wait_browser
expect "cancel: 200" 200 "$(code "${S[@]}" -X POST "$B/api/browser/runs/$C/cancel")"
check "cancel: no Chromium left" wait_none
# The run's Chromium (the browser process itself, not the sandbox around it nor its helpers). The
# sandbox appears first, so waiting for any process of the run is not enough: wait for this one.
browser_pid() {
  ps -eww -o pid,args | grep "kiln-browser/$1" | grep -v -- '--type=' | grep -v bwrap | grep -v ' sh ' \
    | grep -v grep | awk 'NR==1{print $1}'
}
K=$(slow); BROWSER_PID=
for _ in $(seq 1 150); do BROWSER_PID=$(browser_pid "$K"); [ -n "$BROWSER_PID" ] && break; sleep 0.1; done
check "kill -9 of the browser: its Chromium was found" test -n "$BROWSER_PID"
kill -9 "$BROWSER_PID" 2>/dev/null
check "kill -9 of the browser: no Chromium left" wait_none
for _ in $(seq 1 300); do [ "$(curl -s -b "$JAR" "$B/api/browser/runs/$K" | jget 'd["status"]')" = failed ] && break; sleep 0.1; done
expect "kill -9 of the browser: the run failed" failed "$(curl -s -b "$JAR" "$B/api/browser/runs/$K" | jget 'd["status"]')"
check "no profile folder left after either" no_profiles
done_
