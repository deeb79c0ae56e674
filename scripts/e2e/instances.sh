#!/usr/bin/env bash
# Two `kiln serve` instances on one PostgreSQL database and one shared data dir, driven with curl
# and python `websockets`: a session made on A works on B; a master key rotated on A is taken up by
# B (it opens what A re-sealed, A opens what it seals after); a notebook kernel started on A is
# answered 421 through B; an agent run (scripted provider) started
# on A is followed over SSE on B, every event in order; a job running on A cancelled through B and
# a terminal of A attached through B are answered 421 naming A (for a load balancer or the client
# to retry there), and work there; a lockout earned on A holds on B, and so does the login rate
# window; `kill -9` of A during a run: B marks the run lost after the heartbeat timeout and its
# followers' streams end; A starts again.
# Needs KILN_TEST_PG_URL (scripts/lib/postgres.sh); REAL_BIN (or BIN) holds the real binaries.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KILN=${REAL_BIN:-$BIN}/kiln
[ -n "${KILN_TEST_PG_URL:-}" ] || { echo "instances e2e: 0 passed, 1 failed (needs KILN_TEST_PG_URL)"; exit 1; }

WORK=$(mktemp -d)
DB="kiln_inst_$(openssl rand -hex 6)"
psql -q "$KILN_TEST_PG_URL" -c "CREATE DATABASE $DB" > /dev/null
export KILN_DATABASE_URL="${KILN_TEST_PG_URL/\/kiln_test\?//$DB?}"
mkdir -p -m 700 "$WORK/data" && mkdir -p "$WORK/projects/demo" && echo hi > "$WORK/projects/demo/README.md"
LLM_PORT=$(free_port)
python3 "$ROOT/scripts/e2e/fake_llm.py" "$LLM_PORT" ticker 40 100 > "$WORK/llm.log" 2>&1 & LLM_PID=$!
PA=$(free_port); PB=$(free_port)
A=http://127.0.0.1:$PA; BB=http://127.0.0.1:$PB
serve() {  # serve PORT NAME
  "$KILN" serve --port "$1" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
    --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model --instance-timeout 3 \
    --notebook-python "$(python3 -c 'import sys; print(sys.prefix)')/bin/python" \
    >> "$OUT/instances-$2.out" 2>> "$OUT/instances-$2.log" &
}
rm -f "$OUT"/instances-[ab].out "$OUT"/instances-[ab].log
serve "$PA" a; APID=$!
serve "$PB" b; BPID=$!
trap 'kill $APID $BPID $LLM_PID 2>/dev/null; wait 2>/dev/null; psql -q "$KILN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
wait_http "$A/healthz" && wait_http "$BB/healthz" && pass "two instances start together on one empty database" \
  || { fail "two instances start"; echo "instances e2e: $PASSED passed, $FAILED failed"; exit 1; }
expect "they share one master key (one key file, both running)" 1 "$(ls "$WORK/data" | grep -c '^master.key$')"

J='Content-Type: application/json'
setup_owner "$OUT/instances-a.out" "$A" owner@example.com "a long enough password"
CSRF=$(login_csrf "$A" owner@example.com "a long enough password" "$WORK/jar")
expect "a session made on A works on B" 200 "$(curl -s -o /dev/null -w '%{http_code}' -b "$WORK/jar" "$BB/api/auth/session")"
SCOPES='["workspace:list","project:read","project:write","agent:run","agent:read","shell:run","shell:read","pty:open"]'
KEY=$(curl -s -b "$WORK/jar" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"name\":\"ci\",\"scopes\":$SCOPES}" \
  "$BB/api/account/api-keys" | jget 'd["key"]')
AUTH="Authorization: Bearer $KEY"
WS=$(curl -s -H "$AUTH" "$A/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/demo\"}" "$A/api/project/load" | jget 'd["id"]')
check "an API key made on B with A's session (and its CSRF token) works on A" test -n "$PRJ"

# The master key rotated on A: B, which read the old key at its start, takes up the new one from the
# shared data dir when the database names it — it opens what A re-sealed, and what it seals A opens.
# (The session's fresh sign-in is its step-up.)
SJ=(-b "$WORK/jar" -H "X-CSRF-Token: $CSRF" -H "$J")
secret() {  # secret HOST NAME VALUE: sets it; prints the status
  curl -s -o /dev/null -w '%{http_code}' "${SJ[@]}" -d "{\"ws_id\":\"$WS\",\"value\":\"$3\"}" "$1/api/secrets/$2"
}
reveal() { curl -s -b "$WORK/jar" "$1/api/secrets/$2?ws_id=$WS&reason=e2e" | jget 'd.get("value")'; }
expect "a secret set on A" 201 "$(secret "$A" DEPLOY_TOKEN first-value-0123456789)"
expect "... reads on B" first-value-0123456789 "$(reveal "$BB" DEPLOY_TOKEN)"
OLD_KEY=$(cat "$WORK/data/master.key")
expect "the master key rotated on A" 200 "$(curl -s -o /dev/null -w '%{http_code}' "${SJ[@]}" -X POST "$A/api/secrets/rotate-master")"
check "... master.key holds the new key" test "$(cat "$WORK/data/master.key")" != "$OLD_KEY"
expect "B opens the re-sealed secret (it took up the new key)" first-value-0123456789 "$(reveal "$BB" DEPLOY_TOKEN)"
expect "a secret set on B after the rotation" 201 "$(secret "$BB" LATER_TOKEN made-on-b-0123456789)"
expect "... reads on A (B sealed it under the new key)" made-on-b-0123456789 "$(reveal "$A" LATER_TOKEN)"

# An agent run on A, followed on B from the start.
RUN=$(curl -s -H "$AUTH" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"tick\"}" "$A/api/agent/run" | jget 'd["run_id"]')
curl -sN -m 30 -H "$AUTH" "$BB/api/agent/follow?run_id=$RUN" > "$WORK/follow-b.txt"
curl -sN -m 30 -H "$AUTH" "$A/api/agent/follow?run_id=$RUN" > "$WORK/follow-a.txt"
check "B's stream of A's run: ids 1…n without a gap, run.started first, run.completed last" python3 - "$WORK/follow-b.txt" <<'PY'
import sys
blocks = [b for b in open(sys.argv[1]).read().split("\n\n") if "data: " in b]
ids = [int(next(l[4:] for l in b.splitlines() if l.startswith("id: "))) for b in blocks]
types = [next(l[7:] for l in b.splitlines() if l.startswith("event: ")) for b in blocks]
assert len(ids) > 40 and ids == list(range(1, len(ids) + 1)), ids
assert types[0] == "run.started" and types[-1] == "run.completed", (types[0], types[-1])
PY
check "… the same events as A's own stream" cmp -s "$WORK/follow-a.txt" "$WORK/follow-b.txt"

# A job on A, cancelled through B.
JOB=$(curl -s -H "$AUTH" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"command\":\"sleep 30\"}" "$A/api/shell/run" | jget 'd["job_id"]')
curl -s -o "$WORK/cancel-b.json" -w '%{http_code}' -H "$AUTH" -X POST "$BB/api/shell/cancel/$JOB" > "$WORK/cancel-b.code"
expect "cancelling A's job through B: 421" 421 "$(cat "$WORK/cancel-b.code")"
expect "… naming A's URL for the retry" "$A" "$(jget 'd["error"]["details"]["instance_url"]' < "$WORK/cancel-b.json")"
expect "… which cancels it there" cancelled "$(curl -s -H "$AUTH" -X POST "$A/api/shell/cancel/$JOB" | jget 'd["status"]')"

# A terminal of A, attached through B.
PTY=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"project_id\":\"$PRJ\"}" "$A/api/pty/spawn" | jget 'd["id"]')
check "attaching to A's terminal through B: 421 naming A; through A it echoes" python3 - "$BB" "$A" "$PTY" "$KEY" <<'PY'
import asyncio, sys, websockets
b, a, pty, key = sys.argv[1:]
hdr = {"Authorization": "Bearer " + key}
async def main():
    try:
        async with websockets.connect(b.replace("http", "ws") + f"/api/pty/{pty}/stream", additional_headers=hdr):
            raise SystemExit("B accepted the attach")
    except websockets.exceptions.InvalidStatus as e:
        assert e.response.status_code == 421, e.response.status_code
        assert a.encode() in e.response.body, e.response.body
    async with websockets.connect(a.replace("http", "ws") + f"/api/pty/{pty}/stream", additional_headers=hdr) as ws:
        await ws.send(b"echo inst-$((40+2))\n")
        seen = b""
        while b"inst-42" not in seen:
            m = await asyncio.wait_for(ws.recv(), 10)
            seen += m if isinstance(m, bytes) else m.encode()
asyncio.run(main())
PY
curl -s -o /dev/null -H "$AUTH" -X DELETE "$A/api/pty/$PTY"

# A notebook's kernel lives in A's process once a cell ran there: through B, running a cell,
# interrupting or restarting answers 421 naming A (its state is not on B); through A it runs on.
NB=$(curl -s "${SJ[@]}" -d "{\"project_id\":\"$PRJ\",\"path\":\"k.ipynb\"}" "$A/api/notebook" | jget 'd["id"]')
CELL=$(curl -s "${SJ[@]}" -d '{"cell_type":"code","source":"x = 6 * 7\nx"}' "$A/api/notebook/$NB/cells" | jget 'd["id"]')
runcell() { curl -s "${SJ[@]}" -H 'Accept: application/json' -X POST "$1/api/notebook/run/$NB/$CELL"; }
expect "a cell runs on A (42)" 42 "$(runcell "$A" | jget 'd["outputs"][0]["data"]["text/plain"]')"
runcell "$BB" > "$WORK/nb-b.json"
expect "running it through B: 421" misdirected "$(jget 'd["error"]["code"]' < "$WORK/nb-b.json")"
expect "… naming A" "$A" "$(jget 'd["error"]["details"]["instance_url"]' < "$WORK/nb-b.json")"
for action in interrupt restart; do
  expect "$action through B: 421" 421 \
    "$(curl -s -o /dev/null -w '%{http_code}' "${SJ[@]}" -X POST "$BB/api/notebook/$NB/$action")"
done
CELL=$(curl -s "${SJ[@]}" -d '{"cell_type":"code","source":"x"}' "$A/api/notebook/$NB/cells" | jget 'd["id"]')
expect "A's kernel kept its state (a cell reading x there: 42)" 42 "$(runcell "$A" | jget 'd["outputs"][0]["data"]["text/plain"]')"

# A lockout earned on A holds on B.
for _ in 1 2 3 4 5; do
  curl -s -o /dev/null -H "$J" -d '{"email":"owner@example.com","password":"wrong password!!"}' "$A/auth/login"
done
expect "five wrong passwords on A lock the address out on B too (429)" 429 \
  "$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -d '{"email":"owner@example.com","password":"a long enough password"}' "$BB/auth/login")"

# The login rate window (10 per address per 15 minutes) is counted in the database: once A refuses
# this address, B does too, although B saw only one of the attempts.
for _ in $(seq 1 12); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -d '{"email":"nobody@example.com","password":"whatever it is"}' "$A/auth/login")
  [ "$code" = 429 ] && break
done
expect "A's login window is full (429)" 429 "$code"
check "… and B refuses this address too: the window is shared" sh -c \
  "curl -s -H '$J' -d '{\"email\":\"nobody@example.com\",\"password\":\"whatever it is\"}' '$BB/auth/login' | grep -q 'Too many requests'"

# kill -9 of A during a run: B marks it lost, followers' streams end.
RUN2=$(curl -s -H "$AUTH" -H "$J" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\",\"prompt\":\"tick\"}" "$A/api/agent/run" | jget 'd["run_id"]')
sleep 1
curl -sN -m 40 -H "$AUTH" "$BB/api/agent/follow?run_id=$RUN2" > "$WORK/follow-lost.txt" & FOLLOW=$!
sleep 1
kill -9 "$APID"
wait "$FOLLOW"
check "B's follower of A's run ends with run.failed (instance_lost)" sh -c "grep -A1 '^event: run.failed' '$WORK/follow-lost.txt' | grep -q instance_lost"
expect "B reads the run as lost" lost "$(curl -s -H "$AUTH" "$BB/api/agent/runs/$RUN2" | jget 'd.get("status") or d.get("run", {}).get("status")')"
serve "$PA" a; APID=$!
wait_http "$A/healthz" && pass "A starts again cleanly" || fail "A starts again cleanly"
expect "… and serves the run as lost too" lost "$(curl -s -H "$AUTH" "$A/api/agent/runs/$RUN2" | jget 'd.get("status") or d.get("run", {}).get("status")')"

echo "instances e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
