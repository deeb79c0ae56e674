#!/usr/bin/env bash
# Approvals with outside clients against `kiln serve`: a policy (PUT with curl) holds an agent's edits
# under src/** and deploy commands for approval. An agent run (scripted model, fake_llm.py mode edit)
# parks with status waiting_approval; a second member approves with curl and the edit lands; a second
# run is rejected and the file stays; a third expires (--approval-ttl 2); all three decisions are in the
# signed receipt chain (verified). A REST command is answered 202 and runs once approved (its job id
# on the approval); the requester may not approve their own.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
J='Content-Type: application/json'
PW='a long enough password'
WORK=$OUT/approvals
rm -rf "$WORK"; mkdir -p "$WORK/projects/app/src"
FILE=$WORK/projects/app/src/app.txt
echo 'answer = 41' > "$FILE"
PASSED=0; FAILED=0

LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" edit & LLM_PID=$!
PORT=$(free_port)
B=http://127.0.0.1:$PORT
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" --approval-ttl 2 \
  --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model > "$OUT/approvals-serve.out" 2> "$OUT/approvals-serve.log" &
PID=$!
trap 'kill $PID $LLM_PID 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

setup_owner "$OUT/approvals-serve.out" "$B" owner@example.com "$PW"
JAR=$WORK/jar
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$JAR")
S=(-b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J")
WS=$(curl -s -b "$JAR" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s "${S[@]}" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/app\"}" "$B/api/project/load" | jget 'd["id"]')
# A second member to decide (made by the instance admin, added to the workspace).
SETUP=$(curl -s "${S[@]}" -d '{"email":"reviewer@example.com","name":"Reviewer"}' "$B/api/admin/users" | jget 'd["setup_url"]')
curl -s -o /dev/null -H "$J" -d "{\"token\":\"${SETUP##*token=}\",\"email\":\"reviewer@example.com\",\"password\":\"$PW\"}" "$B/auth/setup"
curl -s -o /dev/null "${S[@]}" -d '{"email":"reviewer@example.com","role":"member"}' "$B/api/workspaces/$WS/members"
RJAR=$WORK/rjar
RCSRF=$(login_csrf "$B" reviewer@example.com "$PW" "$RJAR")
R=(-b "$RJAR" -H "X-CSRF-Token: $RCSRF" -H "$J")

expect "policy: require_approval on edit_file under src/** and on deploy commands" 200 "$(code "${S[@]}" -X PUT \
  -d "{\"ws_id\":\"$WS\",\"rules\":[{\"id\":\"src-review\",\"action\":\"agent.tool.edit_file\",\"effect\":\"require_approval\",\"when\":{\"path\":\"src/**\"}},{\"id\":\"deploys\",\"action\":\"shell.run\",\"effect\":\"require_approval\",\"when\":{\"command\":\"^deploy\"}}]}" \
  "$B/api/policies")"

# pending_for RUN: the id of the pending approval the run waits for (waits up to 30 s).
pending_for() {
  for _ in $(seq 1 300); do
    local id; id=$(curl -s -b "$JAR" "$B/api/approvals?ws_id=$WS&state=pending" | jget "next((a['id'] for a in d['items'] if a['run_id'] == '$1'), '')")
    [ -n "$id" ] && { echo "$id"; return 0; }
    sleep 0.1
  done
}
start_run() {
  curl -s "${S[@]}" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"bump the answer\"}" "$B/api/agent/run" | jget 'd["run_id"]'
}

# 1. Approved: the run waits, then the edit lands.
RUN1=$(start_run)
A1=$(pending_for "$RUN1")
check "agent: the edit waits for an approval" test -n "$A1"
expect "agent: the run's status is waiting_approval" waiting_approval "$(curl -s -b "$JAR" "$B/api/agent/runs/$RUN1" | jget 'd["status"]')"
expect "agent: nothing was written meanwhile" 'answer = 41' "$(cat "$FILE")"
expect "the requester cannot approve their own (403)" 403 "$(code "${S[@]}" -d '{}' "$B/api/approvals/$A1/approve")"
expect "another member approves (200, approved)" approved "$(curl -s "${R[@]}" -d '{"reason":"fine"}' "$B/api/approvals/$A1/approve" | jget 'd["state"]')"
curl -sN -b "$JAR" "$B/api/agent/follow?run_id=$RUN1" > "$WORK/run1.sse"
check "agent: approval.required and approval.resolved were streamed" sh -c "grep -q '^event: approval.required' '$WORK/run1.sse' && grep -q '^event: approval.resolved' '$WORK/run1.sse'"
expect "agent: the approved edit landed" 'answer = 42' "$(cat "$FILE")"

# 2. Rejected: the file stays, the model is told.
echo 'answer = 41' > "$FILE"
RUN2=$(start_run)
A2=$(pending_for "$RUN2")
expect "another member rejects with a reason" rejected "$(curl -s "${R[@]}" -d '{"reason":"not now"}' "$B/api/approvals/$A2/reject" | jget 'd["state"]')"
curl -sN -b "$JAR" "$B/api/agent/follow?run_id=$RUN2" > "$WORK/run2.sse"
check "agent: the tool result says it was rejected, with the reason" grep -q 'rejected by an approver: not now' "$WORK/run2.sse"
expect "agent: the rejected edit did not happen" 'answer = 41' "$(cat "$FILE")"

# 3. Expired: nobody decides within --approval-ttl 2.
RUN3=$(start_run)
A3=$(pending_for "$RUN3")
curl -sN -m 30 -b "$JAR" "$B/api/agent/follow?run_id=$RUN3" > "$WORK/run3.sse"
check "agent: the approval expired and the run went on without the edit" grep -q '"decision":"expired"' "$WORK/run3.sse"
expect "an expired approval reads as rejected" rejected "$(curl -s -b "$JAR" "$B/api/approvals/$A3" | jget 'd["state"]')"
expect "… and can no longer be approved (409)" 409 "$(code "${R[@]}" -d '{}' "$B/api/approvals/$A3/approve")"
expect "agent: the file is untouched" 'answer = 41' "$(cat "$FILE")"

# The receipt chain carries all three decisions and verifies.
sleep 0.5
DECISIONS=$(for r in "$RUN1" "$RUN2" "$RUN3"; do curl -s -b "$JAR" "$B/api/receipts/$r" | jget '",".join(a["decision"] for a in d.get("approvals", []))'; done | tr '\n' ' ')
expect "receipts: approved, rejected, expired in the chain" "approved rejected expired " "$DECISIONS"
expect "receipts: the chain verifies" True "$(curl -s "${S[@]}" -X POST "$B/api/receipts/$RUN3/verify" | jget 'd["ok"]')"

# A share link of the approved run: opened with curl and no cookies, its JSON form, then revoked.
LINK=$(curl -s "${S[@]}" -d "{\"ws_id\":\"$WS\",\"subject\":{\"type\":\"run\",\"id\":\"$RUN1\"},\"expires_in_hours\":2}" "$B/api/collab/share-link")
LPATH=$(echo "$LINK" | jget 'd["path"]'); LID=$(echo "$LINK" | jget 'd["id"]')
curl -s -D "$WORK/share.h" "$B$LPATH" > "$WORK/share.html"
check "share link: the run's page opens without cookies, with its diff" sh -c "grep -q 'HTTP/1.1 200' '$WORK/share.h' && grep -q 'answer = 42' '$WORK/share.html'"
check "share link: no-referrer, noindex, no cookie set" sh -c "grep -qi '^referrer-policy: no-referrer' '$WORK/share.h' && grep -qi '^x-robots-tag: noindex' '$WORK/share.h' && ! grep -qi '^set-cookie' '$WORK/share.h'"
check "share link: nothing of the workspace beyond the run (no ws or project id)" sh -c "! grep -q '$WS' '$WORK/share.html'"
expect "share link: the JSON form shows the same run" "$RUN1" "$(curl -s "$B$LPATH.json" | jget 'd["subject"]["id"]')"
curl -s -o /dev/null "${S[@]}" -X DELETE "$B/api/collab/share-links/$LID"
expect "share link: revoked, it is 404 at once" 404 "$(code "$B$LPATH")"

# The same rules through REST: 202, then the job runs on approval.
curl -s "${S[@]}" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"command\":\"deploy() { echo shipped; }; deploy\"}" -w '\n%{http_code}' "$B/api/shell/run" > "$WORK/parked.txt"
expect "REST: a held command is answered 202" 202 "$(tail -1 "$WORK/parked.txt")"
A4=$(head -1 "$WORK/parked.txt" | jget 'd["approval_id"]')
JOB=$(curl -s "${R[@]}" -d '{}' "$B/api/approvals/$A4/approve" | jget 'd.get("job_id") or ""')
check "REST: approving starts the job (its id on the approval)" test -n "$JOB"
curl -sN -m 20 -b "$JAR" "$B/api/shell/jobs/$JOB/events" > "$WORK/job.sse"
check "REST: the approved command ran" grep -q shipped "$WORK/job.sse"
A5=$(curl -s "${S[@]}" -d "{\"project_id\":\"$PRJ\",\"command\":\"deploy\"}" "$B/api/shell/run" | jget 'd["approval_id"]')
curl -s -o /dev/null "${R[@]}" -d '{"reason":"freeze"}' "$B/api/approvals/$A5/reject"
expect "REST: a rejected command never gets a job" None "$(curl -s -b "$JAR" "$B/api/approvals/$A5" | jget 'd.get("job_id")')"
AUDIT=$(for a in approval.requested approval.approved approval.rejected; do store_sql "$WORK/data" "SELECT COUNT(*) FROM audit_log WHERE action = '$a'"; done | paste -sd' ')
expect "every approval is audited: 5 requested, 2 approved, 3 rejected (one by expiry)" "5 2 3" "$AUDIT"

echo "approvals e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
