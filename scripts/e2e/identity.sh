#!/usr/bin/env bash
# Identity end to end with outside clients: curl (with a cookie jar) and pyotp.
#   register → verify link from the outbox → login → MFA setup → pyotp code → logout → login needs MFA →
#   a reused code is refused → a recovery code works once → API key with scopes (Bearer, out of scope 403,
#   revoked 401, never in a log line or a later response) → CSRF refused without the token.
# Called by scripts/e2e/run.sh (venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}

DATA=$(mktemp -d); JAR=$DATA/jar
PORT=$(free_port)
B=http://127.0.0.1:$PORT
"$BIN/kiln" serve --port "$PORT" --data-dir "$DATA" --registration open > "$OUT/identity-serve.out" 2> "$OUT/identity-serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 600); do curl -s -o /dev/null "$B/healthz" && break; sleep 0.1; done
J='Content-Type: application/json'
EMAIL=dev@example.com; PASSWORD='a long enough password'

# Register and verify.
CODE=$(curl -s -o "$OUT/reg.json" -w '%{http_code}' -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"name\":\"Dev\"}" "$B/auth/register")
expect "register → 201" 201 "$CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -c "$JAR" -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$B/auth/login")
expect "login before verifying → 403" 403 "$CODE"
LINK=$(grep -rhoE 'http://[^ ]+/auth/verify\?token=[A-Za-z0-9_]+' "$DATA/outbox" | head -1)
[ -n "$LINK" ] && pass "verification mail in the outbox" || fail "verification mail in the outbox"
expect "verify link → verified" True "$(curl -s "$LINK" | jget 'd["verified"]')"
expect "verify link as a browser → HTML" 1 "$(curl -s -H 'Accept: text/html' "$LINK" | grep -c '<html')"

# Login with a cookie jar; enrol MFA with pyotp.
CSRF=$(curl -s -c "$JAR" -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$B/auth/login" | jget 'd["csrf_token"]')
grep -q kiln_session "$JAR" && pass "login sets the kiln_session cookie" || fail "login sets the kiln_session cookie"
grep -qi 'httponly' <(curl -s -D - -o /dev/null -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$B/auth/login") \
  && pass "session cookie is HttpOnly" || fail "session cookie is HttpOnly"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -X POST "$B/api/auth/mfa-setup")
expect "state change without X-CSRF-Token → 403" 403 "$CODE"
curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -X POST "$B/api/auth/mfa-setup" > "$OUT/mfa.json"
SECRET=$(jget 'd["secret"]' < "$OUT/mfa.json")
if command -v qrencode >/dev/null; then
  expect "MFA setup renders the QR code as SVG (qrencode)" 1 "$(jget '1 if (d["qr_svg"] or "").lstrip().startswith("<?xml") or "<svg" in (d["qr_svg"] or "") else 0' < "$OUT/mfa.json")"
fi
RECOVERY=$(jget 'd["recovery_codes"][0]' < "$OUT/mfa.json")
TOTP="python3 -c 'import pyotp,sys,time; print(pyotp.TOTP(sys.argv[1]).at(time.time() + float(sys.argv[2])))'"
C1=$(eval "$TOTP" "$SECRET" 0)
expect "MFA enrolment with a pyotp code" enabled "$(curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"code\":\"$C1\"}" "$B/api/auth/mfa-verify" | jget 'd["status"]')"
expect "logout" 200 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -X POST "$B/auth/logout")"

# Login again: half-open until the code; a used step is refused.
CSRF=$(curl -s -c "$JAR" -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$B/auth/login" | tee "$OUT/login2.json" | jget 'd["csrf_token"]')
expect "login now needs MFA" True "$(jget 'd["mfa_required"]' < "$OUT/login2.json")"
expect "API before the code → 401 mfa_required" mfa_required "$(curl -s -b "$JAR" "$B/api/workspaces" | jget 'd["error"]["code"]')"
expect "the code used for enrolment is refused" 401 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"code\":\"$C1\"}" "$B/api/auth/mfa-verify")"
C2=$(eval "$TOTP" "$SECRET" 30)
expect "the next code completes login" login_completed "$(curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"code\":\"$C2\"}" "$B/api/auth/mfa-verify" | jget 'd["status"]')"
expect "reused code rejected" 401 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d "{\"code\":\"$C2\"}" "$B/api/auth/mfa-verify")"
expect "signed in fully" 200 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" "$B/api/workspaces")"

# A recovery code works once.
for attempt in 1 2; do
  J2=$DATA/jar$attempt
  CS=$(curl -s -c "$J2" -H "$J" -d "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" "$B/auth/login" | jget 'd["csrf_token"]')
  GOT=$(curl -s -o /dev/null -w '%{http_code}' -b "$J2" -H "X-CSRF-Token: $CS" -H "$J" -d "{\"code\":\"$RECOVERY\"}" "$B/api/auth/mfa-verify")
  if [ $attempt = 1 ]; then expect "recovery code accepted once" 200 "$GOT"; else expect "recovery code refused the second time" 401 "$GOT"; fi
done

# API keys (this session proved its second factor just now, so step-up is satisfied).
curl -s -b "$JAR" -H "X-CSRF-Token: $CSRF" -H "$J" -d '{"name":"ci","scopes":["workspace:list","workspace:read"],"expires_in_days":30}' \
  "$B/api/account/api-keys" > "$OUT/key.json"
KEY=$(jget 'd["key"]' < "$OUT/key.json"); KEY_ID=$(jget 'd["api_key"]["id"]' < "$OUT/key.json")
case $KEY in kf_????????????????????????????????????????) pass "API key is kf_ + 40 characters";; *) fail "API key format";; esac
WS=$(curl -s -H "Authorization: Bearer $KEY" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
expect "Bearer key lists workspaces" ws_ "${WS:0:3}"
expect "Bearer key reads its workspace" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$B/api/workspaces/$WS")"
expect "out-of-scope call → 403" 403 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$B/api/account/sessions")"
expect "no CSRF needed with a key" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$B/api/workspaces")"
curl -s -b "$JAR" "$B/api/account/api-keys" > "$OUT/keys.json"
grep -q "$KEY" "$OUT/keys.json" && fail "key value absent from later responses" || pass "key value absent from later responses"
expect "revoke" 204 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -X DELETE "$B/api/account/api-keys/$KEY_ID")"
expect "revoked key → 401" 401 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "$B/api/workspaces")"
expect "foreign Origin refused" 403 "$(curl -s -o /dev/null -w '%{http_code}' -b "$JAR" -H "X-CSRF-Token: $CSRF" -H 'Origin: https://evil.example' -H "$J" -d '{"name":"x"}' "$B/api/account/update-profile")"
expect "export has the account" 1 "$(curl -s -b "$JAR" "$B/api/account/export-data" | grep -c "$EMAIL")"
grep -q "$KEY" "$OUT/identity-serve.log" "$OUT/identity-serve.out" && fail "key value absent from every log line" || pass "key value absent from every log line"
"$BIN/kiln" doctor --verify-audit --data-dir "$DATA" | grep -q "audit chain verified" && pass "audit chain verifies" || fail "audit chain verifies"

# Mail through a real SMTP server (aiosmtpd) with STARTTLS and a self-signed certificate.
SMTP_DIR=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$SMTP_DIR/key.pem" -out "$SMTP_DIR/cert.pem" \
  -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
SMTP_PORT=$(free_port)
python3 -u -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" --tlscert "$SMTP_DIR/cert.pem" --tlskey "$SMTP_DIR/key.pem" \
  -c aiosmtpd.handlers.Debugging stdout > "$OUT/smtp.log" 2>&1 &
SMTP_PID=$!
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null && break; sleep 0.1; done
for mode in trusted self-signed; do
  D2=$(mktemp -d); P2=$(free_port)
  URL="smtp://127.0.0.1:$SMTP_PORT?starttls=required"; [ $mode = self-signed ] && URL="$URL&verify=false"
  "$BIN/kiln" serve --port "$P2" --data-dir "$D2" --registration open --smtp-url "$URL" --mail-from "Kiln <kiln@example.com>" > /dev/null 2> "$OUT/smtp-serve-$mode.log" &
  P2PID=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$P2/healthz" && break; sleep 0.1; done
  CODE=$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -d '{"email":"mail-'$mode'@example.com","password":"a long enough password","name":"M"}' "http://127.0.0.1:$P2/auth/register")
  sleep 0.5
  if [ $mode = trusted ]; then
    expect "SMTP with certificate checks refuses a self-signed relay (registration still 201)" "201 1" "$CODE $(grep -c 'mail not sent' "$OUT/smtp-serve-$mode.log")"
  else
    LINK2=$(grep -oE 'http://[^ ]+/auth/verify\?token=[A-Za-z0-9_]+' "$OUT/smtp.log" | head -1)
    expect "verification mail delivered over SMTP with STARTTLS" "201 yes" "$CODE $([ -n "$LINK2" ] && echo yes)"
    expect "the mailed link verifies" True "$(curl -s "$LINK2" | jget 'd["verified"]')"
  fi
  kill $P2PID; wait $P2PID 2>/dev/null; rm -rf "$D2"
done
kill $SMTP_PID; rm -rf "$SMTP_DIR"

echo "identity e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
