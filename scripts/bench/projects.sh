#!/usr/bin/env bash
# Project index and search benchmark against ripgrep on the same tree, in one run.
#   scripts/bench/projects.sh            # builds the tree once in .build/bench/projects/tree
# The tree: the latest tag of every Swift package mirror on this machine (/opt/swift-packages),
# unpacked with git archive. Prints: tree size, kiln initial index time and peak RSS, no-change
# rescan time, one rg scan time, and search p50/p99 for a fixed query set, kiln beside rg.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$ROOT/.build/bench/projects
TREE=$BENCH/tree
MIRRORS=${MIRRORS:-/opt/swift-packages}
RUNS=${RUNS:-7}
SKIP_SEARCH=${SKIP_SEARCH:-0}   # 1: index and rescan figures only
# PERF_OUT=FILE records a perf profile of the server during the initial index.
mkdir -p "$BENCH"
command -v rg >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq ripgrep >/dev/null; }
command -v rg >/dev/null || { echo "projects.sh: ripgrep is needed (apt-get install -y ripgrep)"; exit 1; }

# The tree must reach 300 MB and 30,000 files: the latest tag of every mirror, then the tag before
# it of mirrors in turn until there are enough files.
if [ ! -f "$TREE/.done2" ]; then
  rm -rf "$TREE"; mkdir -p "$TREE"
  files=0
  for pass in 1 2; do
    for m in "$MIRRORS"/*/*.git; do
      [ "$pass" = 2 ] && [ "$files" -ge 30000 ] && break
      tag=$(git -C "$m" tag --sort=v:refname 2>/dev/null | tail -"$pass" | head -1)
      [ -n "$tag" ] || continue
      [ "$pass" = 2 ] && [ "$tag" = "$(git -C "$m" tag --sort=v:refname | tail -1)" ] && continue
      dest="$TREE/$(basename "$(dirname "$m")")-$(basename "$m" .git)"
      [ "$pass" = 2 ] && dest="$dest-$tag"
      mkdir -p "$dest"
      n=$(git -C "$m" archive "$tag" | tar -xv -C "$dest" 2>/dev/null | grep -vc '/$' || true)
      files=$((files + n))
    done
  done
  touch "$TREE/.done2"
fi
echo "tree: $(du -sm "$TREE" | cut -f1) MiB, $(find "$TREE" -type f | wc -l) files"

(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
B=http://127.0.0.1:$PORT
"$ROOT/.build/release/kiln" serve --port "$PORT" --data-dir "$DATA" --projects-root "$BENCH" --log-level info > "$BENCH/serve.out" 2> "$BENCH/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "$B/healthz" && break; sleep 0.1; done
J='Content-Type: application/json'
TOKEN=$(grep -oE 'kst_[A-Za-z0-9]{40}' "$BENCH/serve.out" | head -1)
curl -s -o /dev/null -H "$J" -d "{\"token\":\"$TOKEN\",\"email\":\"bench@example.com\",\"password\":\"benchmark password\"}" "$B/auth/setup"
CSRF=$(curl -s -c "$BENCH/jar" -H "$J" -d '{"email":"bench@example.com","password":"benchmark password"}' "$B/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])')
KEY=$(curl -s -b "$BENCH/jar" -H "X-CSRF-Token: $CSRF" -H "$J" -d '{"name":"bench","scopes":["project:read","project:write","workspace:list"]}' "$B/api/account/api-keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
AUTH="Authorization: Bearer $KEY"
WS=$(curl -s -H "$AUTH" "$B/api/workspaces" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$TREE\"}" "$B/api/project/load" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# One rescan: prints "<seconds until the search index was committed (event indexed)> <seconds until
# the job was done (symbols and database too)>".
rescan() {
  local t0 job
  t0=$(date +%s.%N)
  job=$(curl -s -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\"}" "$B/api/project/rescan" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  curl -s -N -H "$AUTH" "$B/api/project/rescan/$job/events" | {
    indexed="" ; next=0
    while IFS= read -r line; do
      case "$line" in
        "event: indexed") indexed=$(date +%s.%N) ;;
        "event: done") next=1 ;;
        data:*) if [ "$next" = 1 ]; then echo "${line#data: }" > "$BENCH/last-rescan.json"; break; fi ;;
      esac
    done
    awk -v a="$t0" -v i="$indexed" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f %.2f\n", i - a, b - a }'
  }
}
# PERF_OUT=file: a perf profile (with call graphs) of the server during the initial index.
[ -n "${PERF_OUT:-}" ] && { perf record -F 499 -g -p "$PID" -o "$PERF_OUT" 2>/dev/null & PERFPID=$!; sleep 0.5; }
read -r INDEXED INITIAL < <(rescan)
[ -n "${PERFPID:-}" ] && { kill -INT "$PERFPID"; wait "$PERFPID" || true; }
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
echo "kiln initial index: search index committed after ${INDEXED}s, whole job (symbols, database) ${INITIAL}s; peak RSS $((HWM / 1024)) MiB (goal < 300)"
echo "  stats: $(cat "$BENCH/last-rescan.json")"
echo "  phases: $(grep -m1 'rescan finished' "$BENCH/serve.log" || true)"
read -r _ NOCHANGE < <(rescan)
echo "kiln no-change rescan: ${NOCHANGE}s (goal < 2)"
echo "kiln index on disk: $(du -sm "$DATA/index" | cut -f1) MiB ($(ls "$DATA"/index/*/ | grep -c '\.idx$') segments), database $(du -sm "$DATA/kiln.db" | cut -f1) MiB"
T0=$(date +%s.%N); rg -c --no-messages -F "zzqqxxnotthere" "$TREE" >/dev/null || true; T1=$(date +%s.%N)
RGSCAN=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')
echo "rg full scan: ${RGSCAN}s; search index / rg scan = $(awk -v a="$INDEXED" -v b="$RGSCAN" 'BEGIN { printf "%.1f", a / b }'), whole job / rg scan = $(awk -v a="$INITIAL" -v b="$RGSCAN" 'BEGIN { printf "%.1f", a / b }') (goal <= 3)"

[ "$SKIP_SEARCH" = 1 ] && exit 0
QUERIES="EventLoopFuture withCheckedThrowingContinuation ByteBuffer HTTPHeaders precondition sqlite3_step ChannelHandler readInbound deinit Sendable"
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int((NR - 1) * p + 0.5) + 1; printf "%.1f", a[i] * 1000 }'; }
: > "$BENCH/kiln.times"; : > "$BENCH/rg.times"
for q in $QUERIES; do
  for _ in $(seq 1 "$RUNS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "$AUTH" "$B/api/project/search?project_id=$PRJ&q=$q&case=1&limit=50" >> "$BENCH/kiln.times"
    T0=$(date +%s.%N); rg -n -F --no-messages "$q" "$TREE" > /dev/null || true; T1=$(date +%s.%N)
    awk -v a="$T0" -v b="$T1" 'BEGIN { print b - a }' >> "$BENCH/rg.times"
  done
done
K50=$(pct 0.5 < "$BENCH/kiln.times"); K99=$(pct 0.99 < "$BENCH/kiln.times")
R50=$(pct 0.5 < "$BENCH/rg.times"); R99=$(pct 0.99 < "$BENCH/rg.times")
echo "search (10 queries x $RUNS): kiln p50 ${K50} ms p99 ${K99} ms; rg p50 ${R50} ms p99 ${R99} ms; rg/kiln p50 = $(awk -v a="$R50" -v b="$K50" 'BEGIN { printf "%.1f", a / b }')x (goal >= 10)"
echo "kiln RSS after: $(( $(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status") / 1024 )) MiB, of which anonymous $(( $(awk '/^RssAnon:/ {print $2}' "/proc/$PID/status") / 1024 )) MiB (the rest is the index's mapped files, shared with the page cache)"
