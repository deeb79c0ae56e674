#!/usr/bin/env bash
# The attacks of the network-safety review, replayed by outside clients against `kiln serve`:
#   - curl: closed registration, a missing Host, page headers, git URLs with credentials or private
#     hosts, folders of other workspaces, API keys on step-up routes, resource ids of another
#     workspace, lockout with Retry-After, the open-registration account that may not execute;
#   - the same probe script (read the master key, the database, the server's /proc environ, another
#     project; write outside the project; list processes) from a shell job (curl, SSE), a terminal
#     (python `websockets`) and an agent's run_command (a scripted provider, fake_llm.py): every read
#     and write fails, only the sandbox's own processes are listed, and the project's tests still pass
#     (pytest and make through /api/shell/test, a Swift package too).
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
# SECURITY_SANDBOX=off shows what the checks catch without the sandbox (they fail).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J='Content-Type: application/json'
PW='a long enough password'
PROVIDER_SECRET=sk-e2e-provider-secret-4711

# Outside /tmp where the checkout is: inside the sandbox /tmp is private, which would hide these
# folders for the wrong reason.
WORK=$OUT/security
rm -rf "$WORK"; mkdir -p "$WORK/projects"
DATA=$WORK/data
PROJECTS=$WORK/projects
mkdir -p "$PROJECTS/demo/tests" "$PROJECTS/other" "$PROJECTS/swiftpkg/Sources/Calc" "$PROJECTS/swiftpkg/Tests/CalcTests"
echo "other project's secret" > "$PROJECTS/other/secret.txt"
cat > "$PROJECTS/demo/tests/test_calc.py" <<'PY'
def test_adds():
    assert 1 + 1 == 2

def test_strings():
    assert "kiln".upper() == "KILN"
PY
printf '[pytest]\n' > "$PROJECTS/demo/pytest.ini"
mkdir -p "$PROJECTS/makeproj"
printf 'test:\n\t@test "$$(echo ok)" = ok && echo "make tests passed"\n' > "$PROJECTS/makeproj/Makefile"
cat > "$PROJECTS/swiftpkg/Package.swift" <<'SW'
// swift-tools-version:5.9
import PackageDescription
let package = Package(name: "Calc", targets: [.target(name: "Calc"), .testTarget(name: "CalcTests", dependencies: ["Calc"])])
SW
echo 'public func double(_ x: Int) -> Int { x * 2 }' > "$PROJECTS/swiftpkg/Sources/Calc/Calc.swift"
cat > "$PROJECTS/swiftpkg/Tests/CalcTests/CalcTests.swift" <<'SW'
import XCTest
@testable import Calc
final class CalcTests: XCTestCase { func testDouble() { XCTAssertEqual(double(21), 42) } }
SW

LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" probe & LLM_PID=$!
PORT=$(free_port)
B=http://127.0.0.1:$PORT
KILN_LLM_API_KEY=$PROVIDER_SECRET "$BIN/kiln" serve --port "$PORT" --data-dir "$DATA" --projects-root "$PROJECTS" \
  --sandbox "${SECURITY_SANDBOX:-bwrap}" --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model \
  > "$OUT/security-serve.out" 2> "$OUT/security-serve.log" &
PID=$!
PID2=""
trap 'kill $PID $LLM_PID $PID2 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; cat "$OUT/security-serve.log"; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
errcode() { curl -s "$@" | jget 'd["error"]["code"]'; }

# --- who may join ---
expect "register on a fresh server: 403 registration_closed" registration_closed \
  "$(errcode -H "$J" -d "{\"email\":\"x@example.com\",\"password\":\"$PW\",\"name\":\"X\"}" "$B/auth/register")"
expect "a wrong setup token is refused (400)" 400 "$(code -H "$J" -d "{\"token\":\"kst_$(printf 'x%.0s' $(seq 40))\",\"email\":\"a@example.com\",\"password\":\"$PW\"}" "$B/auth/setup")"
setup_owner "$OUT/security-serve.out" "$B" owner@example.com "$PW"
JAR=$WORK/jar
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$JAR")
S=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
SCOPES='["workspace:list","workspace:read","workspace:delete","project:read","project:write","shell:run","shell:read","pty:open","agent:run","agent:read","account:write","instance:admin"]'
KEY=$(curl -s "${S[@]}" -d "{\"name\":\"sec\",\"scopes\":$SCOPES}" "$B/api/account/api-keys" | jget 'd["key"]')
H="Authorization: Bearer $KEY"
WS=$(curl -s -H "$H" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
check "owner, API key, workspace" test -n "$WS"

# --- engine and headers ---
expect "HTTP/1.1 without Host: 400" 400 "$(code -H 'Host:' "$B/healthz")"
expect "a Host with a space: 400" 400 "$(code -H 'Host: a b' "$B/healthz")"
HDRS=$(curl -s -D - -o /dev/null "$B/")
check "pages carry a CSP without inline script or framing" sh -c "printf '%s' \"\$1\" | grep -qi \"^content-security-policy:.*default-src 'self'.*frame-ancestors 'none'\"" _ "$HDRS"
check "pages carry X-Frame-Options: DENY and Referrer-Policy: no-referrer" sh -c "printf '%s' \"\$1\" | grep -qi '^x-frame-options: DENY' && printf '%s' \"\$1\" | grep -qi '^referrer-policy: no-referrer'" _ "$HDRS"

# --- projects ---
load() { curl -s -o "$WORK/load.json" -w '%{http_code}' -H "$H" -H "$J" -d "$1" "$B/api/project/load"; }
PRJ=$(curl -s -H "$H" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | jget 'd["id"]')
OTHER=$(curl -s -H "$H" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/other\"}" "$B/api/project/load" | jget 'd["id"]')
check "two projects open" test -n "$PRJ" -a -n "$OTHER"
expect "loading the projects root itself: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS\"}")"
expect "a git_url with credentials: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"https://alice:hunter2secret@example.com/r.git\"}")"
check "… and the credentials are stored nowhere" sh -c "! grep -a -q hunter2secret '$DATA'/kiln.db* '$OUT/security-serve.log'"
expect "a git_url to a loopback host: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"https://127.0.0.1:9/r.git\"}")"
expect "a git_url to the metadata address (decimal spelling): 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"https://2852039166/r.git\"}")"
expect "a git_url to a private IPv4-mapped IPv6 host: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"https://[::ffff:10.0.0.1]/r.git\"}")"
expect "a file:// git_url outside the project roots: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"file:///etc\"}")"
expect "an ext:: git_url: 400" 400 "$(load "{\"ws_id\":\"$WS\",\"git_url\":\"ext::sh -c id\"}")"

# --- the probe: one script, three ways in ---
cat > "$PROJECTS/demo/probe.sh" <<SH
# What a process started for a user can reach. Markers are printed only on a leak.
cat '$DATA/master.key' >/dev/null 2>&1 && echo LEAK-MASTER-KEY
cat '$DATA/receipt.key' >/dev/null 2>&1 && echo LEAK-RECEIPT-KEY
cat '$DATA/kiln.db' >/dev/null 2>&1 && echo LEAK-DATABASE
ls '$DATA' >/dev/null 2>&1 && echo LEAK-DATA-DIR
tr '\\0' '\\n' < /proc/$PID/environ 2>/dev/null | grep -q KILN_LLM && echo LEAK-SERVER-ENVIRON
grep -qs $PROVIDER_SECRET /proc/[0-9]*/environ && echo LEAK-PROVIDER-KEY
env | grep -q '^KILN_' && echo LEAK-KILN-VARIABLES
cat '$PROJECTS/other/secret.txt' >/dev/null 2>&1 && echo LEAK-OTHER-PROJECT
cat /etc/shadow >/dev/null 2>&1 && echo LEAK-SHADOW
ls /root >/dev/null 2>&1 && echo LEAK-ROOT-HOME
[ "\$(id -u)" = 0 ] && echo LEAK-UID-0
echo x > "$PROJECTS/escape-\$1.txt" 2>/dev/null
echo x > "$PROJECTS/other/escape-\$1.txt" 2>/dev/null
echo x > "$DATA/escape-\$1.txt" 2>/dev/null
ps ax -o comm= | grep -q kiln && echo LEAK-SERVER-PROCESS
echo "processes=\$(ps ax --no-headers | wc -l) user=\$(id -un)"
echo probe-complete
SH
# checks CONTEXT FILE TAG: the probe's output in FILE shows no leak, and nothing was written outside.
probe_checks() {
  local ctx=$1 file=$2 tag=$3
  check "$ctx: the probe ran to its end" grep -q probe-complete "$file"
  local leaks; leaks=$(grep -o 'LEAK-[A-Z0-9-]*' "$file" | sort -u | tr '\n' ' ')
  expect "$ctx: master key, receipt key, database, data dir, server environ, other project, /etc/shadow, /root all unreadable" "" "$leaks"
  check "$ctx: nothing written outside the project" sh -c "! ls '$PROJECTS'/escape-$tag.txt '$PROJECTS'/other/escape-$tag.txt '$DATA'/escape-$tag.txt 2>/dev/null | grep -q ."
  local n; n=$(grep -o 'processes=[0-9]*' "$file" | head -1 | cut -d= -f2)
  check "$ctx: ps ax lists only the sandbox's own processes ($n)" test -n "$n" -a "${n:-99}" -le 8
}
ln -s ../other/secret.txt "$PROJECTS/demo/link-out.txt"
ln -s ../other "$PROJECTS/demo/link-dir"
# 1. A shell job over SSE (curl).
curl -sN -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"sh probe.sh job\"}" "$B/api/shell/run" > "$WORK/job.sse"
python3 -c "
import json,sys
for b in open(sys.argv[1]).read().split('\n\n'):
    ls=b.splitlines()
    if 'event: stdout' in ls: print(json.loads(next(l[6:] for l in ls if l.startswith('data: ')))['data'], end='')
" "$WORK/job.sse" > "$WORK/job.txt"
probe_checks "shell job" "$WORK/job.txt" job
# 2. A terminal (python websockets), with job control.
python3 "$ROOT/scripts/e2e/sec_terminal.py" "$B" "$KEY" "$PRJ" > "$WORK/terminal.txt" 2>&1
probe_checks "terminal" "$WORK/terminal.txt" pty
check "terminal: job control works (jobs lists the background sleep)" grep -qE '\[1\]\+? +Running +sleep 100' "$WORK/terminal.txt"
check "terminal: no 'no job control' warning" sh -c "! grep -q 'no job control' '$WORK/terminal.txt'"
# 3. An agent run whose scripted model calls run_command, read_file, write_file and run_tests.
curl -sN -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"probe\"}" "$B/api/agent/run" > "$WORK/agent.sse"
python3 - "$WORK/agent.sse" "$WORK" <<'PY'
import json, sys
results = {}
for b in open(sys.argv[1]).read().split("\n\n"):
    ls = b.splitlines()
    if "event: tool.result" in ls:
        d = json.loads(next(l[6:] for l in ls if l.startswith("data: ")))
        results[d.get("call_id") or d.get("id")] = d
for k, d in results.items():
    open(f"{sys.argv[2]}/agent-{k}.json", "w").write(json.dumps(d))
PY
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['output'])" "$WORK/agent-p1.json" > "$WORK/agent.txt" 2>/dev/null
probe_checks "agent run_command" "$WORK/agent.txt" agent
refused() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['ok'] is False and 'other project' not in d['output'], d" "$1"; }
check "agent read_file ../other/secret.txt is refused" refused "$WORK/agent-p2.json"
check "agent write_file ../escape-tool.txt is refused" refused "$WORK/agent-p3.json"
check "agent read_file through a symlink to another project is refused" refused "$WORK/agent-p5.json"
check "agent write_file through a symlinked folder is refused" refused "$WORK/agent-p6.json"
check "… and no file appeared outside the project" test ! -e "$PROJECTS/escape-tool.txt" -a ! -e "$PROJECTS/other/escape-tool.txt"
check "agent run_tests: the project's tests pass in the sandbox" python3 -c "import json,sys; d=json.load(open(sys.argv[1])); s=json.dumps(d); assert 'exit: 0' in s and '2 passed' in s, s" "$WORK/agent-p4.json"

# --- the project's tests in the sandbox: pytest, make, a Swift package ---
test_run() { # NAME PROJECT_PATH RUNNER
  local id; id=$(curl -s -H "$H" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$2\"}" "$B/api/project/load" | jget 'd["id"]')
  curl -sN -m 900 -H "$H" -H "$J" -d "{\"project_id\":\"$id\",\"timeout_s\":900}" "$B/api/shell/test" > "$WORK/test-$1.sse"
  check "$1 tests pass through /api/shell/test in the sandbox" python3 - "$WORK/test-$1.sse" "$3" <<'PY'
import json, sys
blocks = [b for b in open(sys.argv[1]).read().split("\n\n") if "event: exit" in b]
d = json.loads(next(l[6:] for l in blocks[-1].splitlines() if l.startswith("data: ")))
assert d["code"] == 0, open(sys.argv[1]).read()[-3000:]
if sys.argv[2] != "-":
    assert d["summary"]["runner"] == sys.argv[2] and d["summary"]["failed"] == 0 and d["summary"]["passed"] >= 1, d
PY
}
test_run pytest "$PROJECTS/demo" pytest
test_run make "$PROJECTS/makeproj" -
if command -v swift > /dev/null; then test_run swift "$PROJECTS/swiftpkg" swift; fi

# --- credentials ---
expect "an API key cannot create API keys (403 step_up_required)" step_up_required \
  "$(errcode -H "$H" -H "$J" -d '{"name":"k2","scopes":["workspace:list"]}' "$B/api/account/api-keys")"
expect "an API key cannot delete a workspace (403 step_up_required)" step_up_required "$(errcode -X DELETE -H "$H" "$B/api/workspaces/$WS")"
expect "an API key cannot pass step-up (403)" 403 "$(code -H "$H" -H "$J" -d "{\"password\":\"$PW\"}" "$B/api/auth/step-up")"
expect "an API key cannot invite (403 step_up_required)" step_up_required "$(errcode -H "$H" -H "$J" -d '{"email":"i@example.com"}' "$B/api/admin/invitations")"

# A second account from the admin, in its own workspace.
SETUP=$(curl -s "${S[@]}" -d '{"email":"mallory@example.com","name":"Mallory"}' "$B/api/admin/users" | jget 'd["setup_url"]')
MTOKEN=${SETUP##*token=}
expect "the admin-made account sets its password" 201 "$(code -H "$J" -d "{\"token\":\"$MTOKEN\",\"email\":\"mallory@example.com\",\"password\":\"$PW\"}" "$B/auth/setup")"
MJAR=$WORK/mjar
MCSRF=$(login_csrf "$B" mallory@example.com "$PW" "$MJAR")
M=(-b "$MJAR" -H "X-CSRF-Token: $MCSRF" -H "$J")
MWS=$(curl -s -b "$MJAR" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
check "the second account has its own workspace" test -n "$MWS" -a "$MWS" != "$WS"
expect "the other account is no admin (403 on /api/admin/users)" 403 "$(code -b "$MJAR" "$B/api/admin/users")"
expect "another workspace cannot open a folder already open here (409 folder_in_use)" folder_in_use \
  "$(curl -s "${M[@]}" -d "{\"ws_id\":\"$MWS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | jget 'd["error"]["code"]')"
expect "… nor a folder inside it (409)" 409 "$(code "${M[@]}" -d "{\"ws_id\":\"$MWS\",\"path\":\"$PROJECTS/demo/tests\"}" "$B/api/project/load")"
RESCAN=$(curl -s -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\"}" "$B/api/project/rescan" | jget 'd["job_id"]')
JOB=$(grep -m1 -o '"job_id":"[A-Za-z0-9_]*"' "$WORK/job.sse" | cut -d'"' -f4)
RUN=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$WORK/agent.sse" | cut -d'"' -f4)
expect "another workspace reads no rescan job's events (404)" 404 "$(code -b "$MJAR" "$B/api/project/rescan/$RESCAN/events")"
expect "… no shell job (404)" 404 "$(code -b "$MJAR" "$B/api/shell/jobs/$JOB")"
expect "… no shell job's events (404)" 404 "$(code -b "$MJAR" "$B/api/shell/jobs/$JOB/events")"
expect "… no agent run (404)" 404 "$(code -b "$MJAR" "$B/api/agent/follow?run_id=$RUN")"
expect "… no project file (404)" 404 "$(code -b "$MJAR" "$B/api/project/file?project_id=$PRJ&path=probe.sh")"
expect "… no receipt (404)" 404 "$(code -b "$MJAR" "$B/api/receipts/$RUN")"

# Lockout: only failures count, 5 per address, then 429 with Retry-After.
for _ in 1 2 3 4 5; do curl -s -o /dev/null -H "$J" -d '{"email":"mallory@example.com","password":"wrong password!"}' "$B/auth/login"; done
LOCK=$(curl -s -D - -o /dev/null -H "$J" -d "{\"email\":\"mallory@example.com\",\"password\":\"$PW\"}" "$B/auth/login")
check "the 6th login from this address (right password) is 429 with Retry-After" sh -c "printf '%s' \"\$1\" | grep -q '^HTTP/1.1 429' && printf '%s' \"\$1\" | grep -qi '^retry-after: [0-9]'" _ "$LOCK"
expect "another account from the same address still signs in" 200 "$(code -H "$J" -d "{\"email\":\"owner@example.com\",\"password\":\"$PW\"}" "$B/auth/login")"

# Outbox mode: a password reset mail's token never reaches the log.
curl -s -o /dev/null -H "$J" -d '{"email":"owner@example.com"}' "$B/auth/forgot"
sleep 0.3
RTOKEN=$(grep -rhoE 'token=[A-Za-z0-9_]+' "$DATA/outbox" | tail -1 | cut -d= -f2)
check "the reset link is in the outbox" test -n "$RTOKEN"
check "… and not in the log" sh -c "! grep -q '$RTOKEN' '$OUT/security-serve.log' '$OUT/security-serve.out'"
DBFILE=$(on_sqlite && echo "$DATA/kiln.db" || echo "$DATA/master.key")
check "data dir 0700, keys and database 0600" sh -c "stat -c '%a %n' '$DATA' '$DATA/master.key' '$DBFILE' | awk '{ if (NR==1 && \$1!=\"700\") exit 1; if (NR>1 && \$1!=\"600\") exit 1 }'"
check "kiln doctor reports the sandbox" sh -c "'$BIN/kiln' doctor --data-dir '$DATA' 2>&1 | grep -qi 'sandbox.*bubblewrap'"

# --- open registration: the account may sign in but runs nothing until an admin allows it ---
DATA2=$WORK/data-open; PORT2=$(free_port); B2=http://127.0.0.1:$PORT2
"$BIN/kiln" serve --port "$PORT2" --data-dir "$DATA2" --projects-root "$PROJECTS" --registration open \
  > "$OUT/security-open.out" 2> "$OUT/security-open.log" &
PID2=$!
wait_http "$B2/healthz"
expect "open registration: 201" 201 "$(code -H "$J" -d "{\"email\":\"eve@example.com\",\"password\":\"$PW\",\"name\":\"Eve\"}" "$B2/auth/register")"
sleep 0.3
curl -s -o /dev/null "$(grep -rhoE 'http://[^ ]+/auth/verify\?token=[A-Za-z0-9_]+' "$DATA2/outbox" | head -1)"
EJAR=$WORK/ejar
ECSRF=$(login_csrf "$B2" eve@example.com "$PW" "$EJAR")
E=(-b "$EJAR" -H "X-CSRF-Token: $ECSRF" -H "$J")
expect "the session reports can_execute false" False "$(curl -s -b "$EJAR" "$B2/api/auth/session" | jget 'd["can_execute"]')"
EWS=$(curl -s -b "$EJAR" "$B2/api/workspaces" | jget 'd["items"][0]["id"]')
mkdir -p "$PROJECTS/eve"
EPRJ=$(curl -s "${E[@]}" -d "{\"ws_id\":\"$EWS\",\"path\":\"$PROJECTS/eve\"}" "$B2/api/project/load" | jget 'd["id"]')
expect "the self-registered owner of a workspace cannot run a shell command (403)" 403 \
  "$(code "${E[@]}" -d "{\"project_id\":\"$EPRJ\",\"command\":\"head -c16 $DATA2/master.key\"}" "$B2/api/shell/run")"
expect "… nor open a terminal (403)" 403 "$(code "${E[@]}" -d "{\"project_id\":\"$EPRJ\",\"cols\":80,\"rows\":24}" "$B2/api/pty/spawn")"
check "the verification link never reached the log" sh -c "! grep -q 'verify?token' '$OUT/security-open.log' '$OUT/security-open.out'"

echo "security e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
