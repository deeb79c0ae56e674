# Sourced by bench and e2e scripts: starts `kiln serve` on a free port with a fresh data dir, redeems
# the setup link for an owner, and makes an API key with the given scopes.
#   start_kiln BIN SCOPES_JSON [serve args...]  → sets B (base URL), KEY, AUTH, WS, KILN_PID, KILN_DATA

# setup_token SERVE_OUT: the one-time setup token `kiln serve` printed (waits for the line up to 30 s).
setup_token() {
  local t=""
  for _ in $(seq 1 300); do
    t=$(grep -oE 'kst_[A-Za-z0-9]{40}' "$1" | head -1)
    [ -n "$t" ] && break
    sleep 0.1
  done
  echo "$t"
}

start_kiln() {
  local bin=$1 scopes=$2; shift 2
  KILN_DATA=$(mktemp -d)
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  B=http://127.0.0.1:$port
  "$bin" serve --port "$port" --data-dir "$KILN_DATA" --log-level warn "$@" > "$KILN_DATA/serve.out" 2> "$KILN_DATA/serve.log" &
  KILN_PID=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "$B/healthz" && break; sleep 0.1; done
  local j='Content-Type: application/json' token csrf
  token=$(setup_token "$KILN_DATA/serve.out")
  curl -s -o /dev/null -H "$j" -d "{\"token\":\"$token\",\"email\":\"bench@example.com\",\"password\":\"benchmark password\"}" "$B/auth/setup"
  csrf=$(curl -s -c "$KILN_DATA/jar" -H "$j" -d '{"email":"bench@example.com","password":"benchmark password"}' "$B/auth/login" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
  KEY=$(curl -s -b "$KILN_DATA/jar" -H "X-CSRF-Token: $csrf" -H "$j" -d "{\"name\":\"bench\",\"scopes\":$scopes}" "$B/api/account/api-keys" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  AUTH="Authorization: Bearer $KEY"
  WS=$(curl -s -H "$AUTH" "$B/api/workspaces" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
}
stop_kiln() { kill "$KILN_PID" 2>/dev/null; wait "$KILN_PID" 2>/dev/null; rm -rf "$KILN_DATA"; }
