#!/usr/bin/env bash
# Secrets with outside clients against `kiln serve`: set with curl; handed by name to a shell job
# (curl, SSE), a terminal (python websockets, live and replayed) and an agent run whose scripted model
# (fake_llm.py, mode secret) has its command print the value and reads a file holding it. The value, its
# base64 and its URL-encoded form must appear in none of: the streamed output, the replay, the agent's
# events and transcript, the request bodies the provider received, the database files, the server log.
# Then a policy (PUT with curl) stops a secret's use and a command by rule.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J='Content-Type: application/json'
PW='a long enough password'
VALUE='kiln-e2e s3cr3t/v+lue'
B64=$(printf %s "$VALUE" | base64 | tr -d '=')
URLENC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$VALUE")
WORK=$OUT/secrets
rm -rf "$WORK"; mkdir -p "$WORK/projects/app"
printf 'config: %s\n' "$VALUE" > "$WORK/projects/app/config.txt"
LLM_PORT=$(free_port)
FAKE_LLM_BODIES=$WORK/provider-bodies.txt python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" secret & LLM_PID=$!
PORT=$(free_port)
B=http://127.0.0.1:$PORT
DATA=$WORK/data
"$BIN/kiln" serve --port "$PORT" --data-dir "$DATA" --projects-root "$WORK/projects" --log-level debug \
  --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model > "$OUT/secrets-serve.out" 2> "$OUT/secrets-serve.log" &
PID=$!
trap 'kill $PID $LLM_PID 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; exit 1; }
setup_owner "$OUT/secrets-serve.out" "$B" owner@example.com "$PW"
JAR=$WORK/jar
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$JAR")
S=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
SCOPES='["workspace:list","project:write","project:read","shell:run","shell:read","pty:open","agent:run","agent:read","secrets:list","secrets:write","policy:manage"]'
KEY=$(curl -s "${S[@]}" -d "{\"name\":\"e2e\",\"scopes\":$SCOPES}" "$B/api/account/api-keys" | jget 'd["key"]')
H="Authorization: Bearer $KEY"
WS=$(curl -s -H "$H" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s -H "$H" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/app\"}" "$B/api/project/load" | jget 'd["id"]')
expect "set a secret (201)" 201 "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" -H "$J" -d "$(python3 -c 'import json,sys; print(json.dumps({"ws_id": sys.argv[1], "value": sys.argv[2]}))' "$WS" "$VALUE")" "$B/api/secrets/API_TOKEN")"
expect "the list shows no value" 0 "$(curl -s -H "$H" "$B/api/secrets?ws_id=$WS" | grep -c "s3cr3t")"
# none FILE...: no form of the value in these files.
none() { ! grep -a -q -F -e "$VALUE" -e "$B64" -e "$URLENC" "$@"; }

# A job over SSE.
curl -sN -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"secrets\":[\"API_TOKEN\"],\"command\":\"echo \\\"raw=\$API_TOKEN\\\"; printf %s \\\"\$API_TOKEN\\\" | base64; python3 -c 'import os,urllib.parse; print(urllib.parse.quote(os.environ[\\\"API_TOKEN\\\"], safe=\\\"\\\"))'\"}" "$B/api/shell/run" > "$WORK/job.sse"
check "job: the process had the value (its output shows where it was, redacted)" grep -q 'raw=\[secret:API_TOKEN\]' "$WORK/job.sse"
check "job: no form of the value in the stream" none "$WORK/job.sse"
JOB=$(grep -m1 -o '"job_id":"[A-Za-z0-9_]*"' "$WORK/job.sse" | cut -d'"' -f4)
curl -s -H "$H" "$B/api/shell/jobs/$JOB" > "$WORK/job.json"
check "job: nor in the stored job" none "$WORK/job.json"

# A terminal, live and replayed.
python3 "$ROOT/scripts/e2e/sec_secret_terminal.py" "$B" "$KEY" "$PRJ" API_TOKEN > "$WORK/terminal.txt" 2>&1
check "terminal: the shell had it ([[secret:API_TOKEN]] shown)" grep -q '\[\[secret:API_TOKEN\]\]' "$WORK/terminal.txt"
check "terminal: no form of the value live or in the replay" none "$WORK/terminal.txt"
check "terminal: the replay came" grep -q -- '--- replay ---' "$WORK/terminal.txt"

# An agent run.
curl -sN -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"check the config\",\"secrets\":[\"API_TOKEN\"]}" "$B/api/agent/run" > "$WORK/agent.sse"
RUN=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$WORK/agent.sse" | cut -d'"' -f4)
curl -s -H "$H" "$B/api/agent/runs/$RUN" > "$WORK/run.json"
check "agent: the command and the file read were redacted" sh -c "grep -q 'token=\[secret:API_TOKEN\]' '$WORK/agent.sse' && grep -q 'config: \[secret:API_TOKEN\]' '$WORK/agent.sse'"
check "agent: no form of the value in its events or transcript" none "$WORK/agent.sse" "$WORK/run.json"
check "agent: the provider received requests" test -s "$WORK/provider-bodies.txt"
check "agent: no form of the value in what the provider received" none "$WORK/provider-bodies.txt"

# At rest and in the log.
sleep 0.5
check "the database files hold no form of the value (only ciphertext)" none "$DATA"/kiln.db*
check "the server log (debug level) holds no form of the value" none "$OUT/secrets-serve.log" "$OUT/secrets-serve.out"

# A policy stops a secret's use and a command, naming the rule.
curl -s -o /dev/null -H "$H" -H "$J" -X PUT -d "{\"ws_id\":\"$WS\",\"rules\":[{\"id\":\"no-token\",\"action\":\"secrets.use\",\"effect\":\"deny\",\"when\":{\"secret\":\"API_*\"}},{\"id\":\"no-rm\",\"action\":\"shell.run\",\"effect\":\"deny\",\"when\":{\"command\":\"rm\\\\s+-rf\"}}]}" "$B/api/policies"
expect "policy: the secret's use is refused (403 policy_denied)" policy_denied "$(curl -s -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"true\",\"secrets\":[\"API_TOKEN\"]}" "$B/api/shell/run" | jget 'd["error"]["code"]')"
expect "policy: rm -rf is refused, naming the rule" no-rm "$(curl -s -H "$H" -H "$J" -d "{\"project_id\":\"$PRJ\",\"command\":\"rm -rf config.txt\"}" "$B/api/shell/run" | jget 'd["error"]["details"]["rule_id"]')"
check "policy: … and the file is still there" test -f "$WORK/projects/app/config.txt"

echo "secrets e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
