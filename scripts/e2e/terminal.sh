#!/usr/bin/env bash
# Shell, terminals and ssh end to end with outside clients against `kiln serve`:
#   - curl: POST /api/shell/run streamed over SSE, a job resumed by cursor;
#   - python `websockets` (pty_check.py): spawn, resize + `stty size`, UTF-8 bytes, detach/reattach replay,
#     two viewers, `exit 3`;
#   - a real sshd on 127.0.0.1 with generated host and user keys: ssh-hosts, ssh-run, ssh-pull, refusals.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

DATA=$(mktemp -d)
PROJECTS=$(mktemp -d)
mkdir -p "$PROJECTS/demo" && echo "hello" > "$PROJECTS/demo/README.md"
# sshd's StrictModes refuses keys under a world-writable folder such as /tmp (where a CI clone may
# live), so this test-only sshd runs with StrictModes off; its keys live under .build/.
SSHDIR=$ROOT/.build/e2e/ssh
rm -rf "$SSHDIR"; mkdir -p "$SSHDIR"; chmod 700 "$SSHDIR"
PORT=$(free_port)
B=http://127.0.0.1:$PORT
SSHD_PID=""
"$BIN/kiln" serve --port "$PORT" --data-dir "$DATA" --projects-root "$PROJECTS" --ssh-config "$SSHDIR/config" \
  > "$OUT/terminal-serve.out" 2> "$OUT/terminal-serve.log" &
PID=$!
trap 'kill $PID $SSHD_PID 2>/dev/null; rm -rf "$DATA" "$PROJECTS"' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; cat "$OUT/terminal-serve.log"; exit 1; }

J='Content-Type: application/json'
TOKEN=$(setup_token "$OUT/terminal-serve.out")
curl -s -o /dev/null -H "$J" -d "{\"token\":\"$TOKEN\",\"email\":\"owner@example.com\",\"name\":\"Owner\",\"password\":\"a long enough password\"}" "$B/auth/setup"
JAR=$(mktemp)
CSRF=$(curl -s -c "$JAR" -H "$J" -d '{"email":"owner@example.com","password":"a long enough password"}' "$B/auth/login" | jget 'd["csrf_token"]')
SCOPES='["workspace:list","workspace:read","project:read","project:write","shell:run","shell:read","pty:open","ssh:run"]'
KEY=$(curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"name\":\"e2e\",\"scopes\":$SCOPES}" "$B/api/account/api-keys" | jget 'd["key"]')
H="Authorization: Bearer $KEY"
WS=$(curl -s -H "$H" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s -H "$H" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$PROJECTS/demo\"}" "$B/api/project/load" | jget 'd["id"]')
check "setup, API key and project" test -n "$PRJ"

# --- shell over SSE with curl ---
curl -sN -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"cat README.md; echo oops >&2; exit 4\"}" "$B/api/shell/run" > "$OUT/shell-run.txt"
check "shell/run streams started, stdout, stderr, exit" python3 - "$OUT/shell-run.txt" <<'PY'
import json, sys
events = [b for b in open(sys.argv[1]).read().split("\n\n") if b.strip()]
types = [next(l[7:] for l in b.splitlines() if l.startswith("event: ")) for b in events]
data = [json.loads(next(l[6:] for l in b.splitlines() if l.startswith("data: "))) for b in events]
assert types[0] == "started" and types[-1] == "exit", types
assert "".join(d["data"] for t, d in zip(types, data) if t == "stdout") == "hello\n"
assert "".join(d["data"] for t, d in zip(types, data) if t == "stderr") == "oops\n"
assert data[-1]["code"] == 4, data[-1]
PY
JOB=$(curl -s -H "$H" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"command\":\"for i in 1 2 3; do echo n\$i; done\"}" "$B/api/shell/run" | jget 'd["job_id"]')
sleep 1
expect "a job's events resume after cursor 2" "3" "$(curl -sN -H "$H" "$B/api/shell/jobs/$JOB/events?cursor=2" | grep -m1 '^id: ' | cut -d' ' -f2)"
expect "cwd escape refused (400)" 400 "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"pwd\",\"cwd\":\"../..\"}" "$B/api/shell/run")"

# --- terminals with python websockets ---
python3 "$ROOT/scripts/e2e/pty_check.py" "$B" "$KEY" "$PRJ" | tee "$OUT/pty.txt"
P=$(awk '/^pty e2e:/ { print $3 }' "$OUT/pty.txt"); F=$(awk '/^pty e2e:/ { print $5 }' "$OUT/pty.txt")
PASSED=$((PASSED + ${P:-0})); FAILED=$((FAILED + ${F:-1}))
expect "a cross-origin browser handshake is refused (403)" 403 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H 'Origin: http://evil.example' \
  -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' \
  "$B/api/pty/pty_0000000000000000000000/stream")"

# --- ssh against a real sshd ---
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
if [ ! -x "$SSHD" ]; then
  echo "--   sshd not installed (apt-get install -y openssh-server); ssh checks skipped"
else
  mkdir -p /run/sshd 2>/dev/null || true
  ssh-keygen -q -t ed25519 -N '' -f "$SSHDIR/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$SSHDIR/id_ed25519"
  cp "$SSHDIR/id_ed25519.pub" "$SSHDIR/authorized_keys"; chmod 600 "$SSHDIR/authorized_keys"
  SSHPORT=$(free_port)
  cat > "$SSHDIR/sshd_config" <<CFG
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $SSHDIR/host_key
AuthorizedKeysFile $SSHDIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PermitRootLogin prohibit-password
PidFile $SSHDIR/sshd.pid
Subsystem sftp internal-sftp
CFG
  echo "[127.0.0.1]:$SSHPORT $(cut -d' ' -f1,2 "$SSHDIR/host_key.pub")" > "$SSHDIR/known_hosts"
  cat > "$SSHDIR/extra.conf" <<CFG
Host kiln-included
  HostName 127.0.0.1
  Port $SSHPORT
CFG
  cat > "$SSHDIR/config" <<CFG
Include $SSHDIR/extra.conf
Host kiln-test
  HostName 127.0.0.1
  Port $SSHPORT
  User $(id -un)
  IdentityFile $SSHDIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $SSHDIR/known_hosts
Host *.wildcard
  User nobody
CFG
  "$SSHD" -D -e -f "$SSHDIR/sshd_config" 2> "$OUT/sshd.log" &
  SSHD_PID=$!
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$SSHPORT) 2>/dev/null && break; sleep 0.1; done
  curl -s -H "$H" "$B/api/shell/ssh-hosts" > "$OUT/ssh-hosts.json"
  check "ssh-hosts lists the config's hosts, following Include, without wildcards" python3 - "$OUT/ssh-hosts.json" "$SSHPORT" <<'PY'
import json, sys
items = {h["host"]: h for h in json.load(open(sys.argv[1]))["items"]}
assert set(items) == {"kiln-test", "kiln-included"}, items
h = items["kiln-test"]
assert h["hostname"] == "127.0.0.1" and h["port"] == int(sys.argv[2]) and h["identity_file"].endswith("id_ed25519"), h
PY
  # ssh uses the server's own keys: a signed-in session that confirmed itself lately (the login
  # just now counts); an API key is refused (403 step_up_required).
  expect "ssh-run refuses an API key (403)" 403 "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" -H "$J" -d '{"host":"kiln-test","command":"id"}' "$B/api/shell/ssh-run")"
  curl -sN -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d '{"ws_id":"'$WS'","host":"kiln-test","command":"echo remote-$((40+2)); exit 5"}' "$B/api/shell/ssh-run" > "$OUT/ssh-run.txt"
  check "ssh-run streams the remote output" grep -q '"data":"remote-42\\n"' "$OUT/ssh-run.txt"
  check "ssh-run ends with the remote exit code" grep -q '"code":5' "$OUT/ssh-run.txt"
  head -c 100000 /dev/urandom > "$SSHDIR/remote.bin"
  curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"ws_id\":\"$WS\",\"host\":\"kiln-test\",\"remote_path\":\"$SSHDIR/remote.bin\",\"project_id\":\"$PRJ\",\"dest_path\":\"pulled.bin\"}" \
    "$B/api/shell/ssh-pull" > "$OUT/ssh-pull.json"
  check "ssh-pull writes the file into the project" cmp -s "$SSHDIR/remote.bin" "$PROJECTS/demo/pulled.bin"
  expect "ssh-pull reports the sha256" "$(sha256sum "$SSHDIR/remote.bin" | cut -d' ' -f1)" "$(jget 'd["sha256"]' < "$OUT/ssh-pull.json")"
  expect "a host not in the config is refused (400)" 400 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d '{"ws_id":"'$WS'","host":"127.0.0.1","command":"id"}' "$B/api/shell/ssh-run")"
  expect "ssh-pull destination outside the project is refused (400)" 400 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" \
    -d "{\"ws_id\":\"$WS\",\"host\":\"kiln-test\",\"remote_path\":\"$SSHDIR/remote.bin\",\"project_id\":\"$PRJ\",\"dest_path\":\"../escape.bin\"}" "$B/api/shell/ssh-pull")"
  check "nothing was written outside the project" test ! -e "$PROJECTS/escape.bin"
  # The workspace's policy judges pulls (ssh.pull, by host): denied, then held and approved by the owner
  # (the rule allows self-approval), which performs the pull.
  C=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
  PULL="{\"ws_id\":\"$WS\",\"host\":\"kiln-test\",\"remote_path\":\"$SSHDIR/remote.bin\",\"project_id\":\"$PRJ\",\"dest_path\":\"held.bin\"}"
  curl -s -o /dev/null "${C[@]}" -X PUT -d "{\"ws_id\":\"$WS\",\"rules\":[{\"id\":\"no-pulls\",\"action\":\"ssh.pull\",\"effect\":\"deny\",\"when\":{\"host\":\"kiln-*\"}}]}" "$B/api/policies"
  expect "policy: an ssh-pull from a denied host is refused, naming the rule" no-pulls "$(curl -s "${C[@]}" -d "$PULL" "$B/api/shell/ssh-pull" | jget 'd["error"]["details"]["rule_id"]')"
  curl -s -o /dev/null "${C[@]}" -X PUT -d "{\"ws_id\":\"$WS\",\"rules\":[{\"id\":\"review-pulls\",\"action\":\"ssh.pull\",\"effect\":\"require_approval\",\"self_approval\":true}]}" "$B/api/policies"
  APV=$(curl -s "${C[@]}" -d "$PULL" "$B/api/shell/ssh-pull" | jget 'd.get("approval_id", "")')
  check "policy: a held ssh-pull is answered with an approval and writes nothing yet" sh -c "[ -n '$APV' ] && [ ! -e '$PROJECTS/demo/held.bin' ]"
  curl -s "${C[@]}" -d '{}' "$B/api/approvals/$APV/approve" > "$OUT/ssh-pull-approved.json"
  check "policy: approving it performs the pull (its sha256 on the approval)" sh -c "cmp -s '$SSHDIR/remote.bin' '$PROJECTS/demo/held.bin' && grep -q \"\$(sha256sum '$SSHDIR/remote.bin' | cut -d' ' -f1)\" '$OUT/ssh-pull-approved.json'"
  curl -s -o /dev/null "${C[@]}" -X PUT -d "{\"ws_id\":\"$WS\",\"rules\":[]}" "$B/api/policies"
fi

echo "terminal e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
