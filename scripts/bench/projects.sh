#!/usr/bin/env bash
# Project index and search benchmark against ripgrep on the same tree, in one run.
#   scripts/bench/projects.sh            # builds the tree once in .build/bench/projects/tree
# The tree: the latest tag of every Swift package mirror on this machine (/opt/swift-packages),
# unpacked with git archive. Prints: tree size; kiln's initial index (INDEX_RUNS times on fresh
# servers, default 3: time and CPU until the search index is committed and until the whole job is
# done, peak RSS) beside an rg scan of the tree in the same runs; the no-change rescan; and search
# p50/p99 for a fixed query set, kiln beside rg.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$ROOT/.build/bench/projects
TREE=$BENCH/tree
MIRRORS=${MIRRORS:-/opt/swift-packages}
RUNS=${RUNS:-7}
SKIP_SEARCH=${SKIP_SEARCH:-0}   # 1: index and rescan figures only
# PERF_OUT=FILE records a perf profile of the server during the initial index (PERF_PHASE=nochange:
# during the no-change rescan).
mkdir -p "$BENCH"
. "$ROOT/scripts/lib/deps.sh"
command -v rg >/dev/null || ensure_packages ripgrep
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

# KILN_BIN: another build to measure (scripts/bench/compare.sh measures an older one too).
if [ -z "${KILN_BIN:-}" ]; then (cd "$ROOT" && swift build -c release --product kiln >/dev/null); fi
KILN_BIN=${KILN_BIN:-$ROOT/.build/release/kiln}
J='Content-Type: application/json'
PID=""; DATA=""
trap '[ -n "$PID" ] && stop_kiln' EXIT

# A fresh server on a fresh data directory, with an API key and the tree loaded as a project.
. "$ROOT/scripts/lib/kiln_server.sh"
start_server() {
  [ -n "$PID" ] && stop_kiln
  start_kiln "$KILN_BIN" '["project:read","project:write","workspace:list"]' --projects-root "$BENCH" --log-level info
  PID=$KILN_PID; DATA=$KILN_DATA; SERVE_LOG=$KILN_DATA/serve.log
  PRJ=$(curl -s -H "$AUTH" -H "$J" -d "{\"ws_id\":\"$WS\",\"path\":\"$TREE\"}" "$B/api/project/load" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
}

# CPU seconds the server has used, its finished children (ctags) included: steadier than wall time
# on a shared machine, and it shows where the work went.
TICK=$(getconf CLK_TCK)
cpu() { awk -v t="$TICK" '{ printf "%.2f", ($14 + $15 + $16 + $17) / t }' "/proc/$PID/stat"; }

# One rescan: prints "<seconds until the search index was committed (event indexed)> <seconds until
# the job was done (symbols and database too)> <CPU seconds until indexed> <CPU seconds in all>".
rescan() {
  local t0 job c0
  t0=$(date +%s.%N); c0=$(cpu)
  job=$(curl -s -H "$AUTH" -H "$J" -d "{\"project_id\":\"$PRJ\"}" "$B/api/project/rescan" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  curl -s -N -H "$AUTH" "$B/api/project/rescan/$job/events" | {
    indexed="" ; next=0; cindexed=""
    while IFS= read -r line; do
      case "$line" in
        "event: indexed") indexed=$(date +%s.%N); cindexed=$(cpu) ;;
        "event: done") next=1 ;;
        data:*) if [ "$next" = 1 ]; then echo "${line#data: }" > "$BENCH/last-rescan.json"; break; fi ;;
      esac
    done
    awk -v a="$t0" -v i="$indexed" -v b="$(date +%s.%N)" -v c0="$c0" -v ci="$cindexed" -v c1="$(cpu)" \
      'BEGIN { printf "%.2f %.2f %.2f %.2f\n", i - a, b - a, ci - c0, c1 - c0 }'
  }
}

# One rg scan of the whole tree (a literal found nowhere): "<wall s> <CPU s>".
rg_scan() {
  TIMEFORMAT='%R %U %S'
  { time rg -c --no-messages -F "zzqqxxnotthere" "$TREE" >/dev/null || true; } 2>&1 | awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }'
}

# PERF_OUT=file: a perf profile (with call graphs) of the server during the first initial index, or
# during the no-change rescan with PERF_PHASE=nochange.
perf_start() { [ -n "${PERF_OUT:-}" ] && [ "${PERF_PHASE:-initial}" = "$1" ] && { perf record -F 499 -g -p "$PID" -o "$PERF_OUT" 2>/dev/null & PERFPID=$!; sleep 0.5; }; return 0; }
perf_stop() { [ -n "${PERFPID:-}" ] && { kill -INT "$PERFPID"; wait "$PERFPID" || true; PERFPID=""; }; return 0; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# The initial index INDEX_RUNS times (each on a fresh server and data directory), an rg scan beside
# each, so both see the same state of a machine whose speed drifts; medians are reported.
INDEX_RUNS=${INDEX_RUNS:-3}
# A scan first, discarded: both then read the tree from the page cache, not the first one from disk.
rg_scan > /dev/null
: > "$BENCH/index.runs"
for run in $(seq 1 "$INDEX_RUNS"); do
  start_server
  [ "$run" = 1 ] && perf_start initial
  read -r indexed whole cpu_indexed cpu_whole < <(rescan)
  perf_stop
  read -r rg_wall rg_cpu < <(rg_scan)
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
  echo "$indexed $whole $cpu_indexed $cpu_whole $rg_wall $rg_cpu $((hwm / 1024))" >> "$BENCH/index.runs"
  echo "  run $run: search index ${indexed}s (${cpu_indexed} CPU s), whole job ${whole}s (${cpu_whole} CPU s), rg ${rg_wall}s (${rg_cpu} CPU s), peak RSS $((hwm / 1024)) MiB"
done
col() { awk -v c="$1" '{ print $c }' "$BENCH/index.runs" | median; }
INDEXED=$(col 1); INITIAL=$(col 2); CPU_INDEXED=$(col 3); CPU_INITIAL=$(col 4); RGSCAN=$(col 5); RGCPU=$(col 6)
PEAK=$(awk '{ print $7 }' "$BENCH/index.runs" | sort -n | tail -1)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
echo "kiln initial index (median of $INDEX_RUNS): search index committed after ${INDEXED}s (${CPU_INDEXED} CPU s), whole job (symbols, database) ${INITIAL}s (${CPU_INITIAL} CPU s); peak RSS ${PEAK} MiB (goal < 300)"
echo "  stats: $(cat "$BENCH/last-rescan.json")"
echo "  phases: $(grep -m1 'rescan finished' "$SERVE_LOG" || true)"
echo "rg full scan (median): ${RGSCAN}s (${RGCPU} CPU s); search index / rg scan = $(ratio "$INDEXED" "$RGSCAN") ($(ratio "$CPU_INDEXED" "$RGCPU") in CPU), whole job / rg scan = $(ratio "$INITIAL" "$RGSCAN") ($(ratio "$CPU_INITIAL" "$RGCPU") in CPU) (goal <= 3)"
perf_start nochange
: > "$BENCH/nochange.runs"
for _ in 1 2 3; do read -r _ t _ _ < <(rescan); echo "$t" >> "$BENCH/nochange.runs"; done
perf_stop
echo "kiln no-change rescan (median of 3): $(median < "$BENCH/nochange.runs")s (goal < 2)"
echo "kiln index on disk: $(du -sm "$DATA/index" | cut -f1) MiB ($(ls "$DATA"/index/*/ | grep -c '\.idx$') segments), database $(du -sm "$DATA/kiln.db" | cut -f1) MiB"

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
