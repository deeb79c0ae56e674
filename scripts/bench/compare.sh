#!/usr/bin/env bash
# This tree against an older revision, in one run on this machine: the engine benchmark (kiln-bench
# beside Hummingbird), the projects benchmark (index and search beside ripgrep) and an authenticated
# JSON route of the whole server (old and new interleaved), each printed for both builds, so a change
# that should not move performance (a refactor) can show that it did not.
#   scripts/bench/compare.sh REV          # e.g. f3f5e7c; REPEATS=3 DURATION=10s INDEX_RUNS=3 by default
# The older revision is built (release) in .build-compare/ (a git worktree, ignored by git).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REV=${1:?usage: compare.sh REV}
export REPEATS=${REPEATS:-3} DURATION=${DURATION:-10s} INDEX_RUNS=${INDEX_RUNS:-3} RUNS=${RUNS:-5}
OLD=$ROOT/.build-compare/src
OUT=$ROOT/.build/bench/compare-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
. "$ROOT/scripts/lib/deps.sh"
command -v wrk >/dev/null || ensure_packages wrk

if [ ! -d "$OLD" ]; then git -C "$ROOT" worktree add -f "$OLD" "$REV" >/dev/null; else git -C "$OLD" checkout -q --detach "$REV"; fi
echo "# building $REV (old) and the working tree (new), release"
(cd "$OLD" && swift build -c release --product kiln >/dev/null && swift build -c release --product kiln-bench >/dev/null)
(cd "$ROOT" && swift build -c release --product kiln >/dev/null && swift build -c release --product kiln-bench >/dev/null)

# ONLY=app (or search) runs just that part.
ONLY=${ONLY:-all}
for side in old new; do
  [ "$ONLY" = all ] || break
  dir=$ROOT; [ "$side" = old ] && dir=$OLD
  echo "# engine ($side)"
  KILN_BENCH_BIN=$dir/.build/release/kiln-bench IDLE_CONNS=${IDLE_CONNS:-2000} bash "$ROOT/scripts/bench/http.sh" > "$OUT/http-$side.txt" 2>&1
  grep -E '^ratio|RSS' "$OUT/http-$side.txt" | sed "s/^/$side /"
  echo "# projects ($side)"
  KILN_BIN=$dir/.build/release/kiln bash "$ROOT/scripts/bench/projects.sh" > "$OUT/projects-$side.txt" 2>&1
  grep -E '^(kiln|rg|search)' "$OUT/projects-$side.txt" | sed "s/^/$side /"
done

# Search, old and new interleaved query by query on the same tree (projects.sh runs them apart).
. "$ROOT/scripts/lib/kiln_server.sh"
if [ "$ONLY" = all ] || [ "$ONLY" = search ]; then
TREE=$ROOT/.build/bench/projects/tree
declare -A BASE KEYS PRJS PIDS DATAS
for side in old new; do
  dir=$ROOT; [ "$side" = old ] && dir=$OLD
  start_kiln "$dir/.build/release/kiln" '["project:read","project:write","workspace:list"]' --projects-root "$ROOT/.build/bench/projects" --log-level error
  BASE[$side]=$B; KEYS[$side]=$AUTH; PIDS[$side]=$KILN_PID; DATAS[$side]=$KILN_DATA
  PRJS[$side]=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$TREE\"}" "$B/api/project/load" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s -o /dev/null -H "$AUTH" "$B/api/project/search?project_id=${PRJS[$side]}&q=warmup"
done
QUERIES="EventLoopFuture withCheckedThrowingContinuation ByteBuffer HTTPHeaders precondition sqlite3_step ChannelHandler readInbound deinit Sendable"
: > "$OUT/search.old"; : > "$OUT/search.new"
for _ in $(seq 1 "$RUNS"); do for q in $QUERIES; do for side in old new; do
  curl -s -o /dev/null -w '%{time_total}\n' -H "${KEYS[$side]}" "${BASE[$side]}/api/project/search?project_id=${PRJS[$side]}&q=$q&case=1&limit=50" >> "$OUT/search.$side"
done; done; done
for side in old new; do kill "${PIDS[$side]}"; wait "${PIDS[$side]}" 2>/dev/null || true; rm -rf "${DATAS[$side]}"; done
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int((NR - 1) * p + 0.5) + 1; printf "%.1f", a[i] * 1000 }'; }
for side in old new; do echo "search interleaved $side: p50 $(pct 0.5 < "$OUT/search.$side") ms, p99 $(pct 0.99 < "$OUT/search.$side") ms"; done
fi

# The whole server, old and new interleaved: a public JSON route (router, middleware, handler) and
# GET /api/workspaces with an API key (key lookup, rate limit, access check; past the key's 600-token
# bucket most answers are its 429, which is the same path up to the handler).
app_route() {
  local label=$1 path=$2 scopes=$3
  : > "$OUT/app-$label.txt"
  for _ in $(seq 1 "$REPEATS"); do
    for side in old new; do
      dir=$ROOT; [ "$side" = old ] && dir=$OLD
      start_kiln "$dir/.build/release/kiln" "$scopes" --log-level error
      local h="X-None: 1"; [ "$label" = keyed ] && h=$AUTH
      wrk -t2 -c64 -d2s -H "$h" "$B$path" > /dev/null
      wrk -t2 -c64 -d"$DURATION" --latency -H "$h" "$B$path" \
        | awk -v s="$side" '/^Requests\/sec:/ { r = $2 } /^ +99%/ { p = $2 } /Non-2xx/ { bad = $NF } END { print s, r, p, bad + 0 }' >> "$OUT/app-$label.txt"
      stop_kiln
    done
  done
  awk -v label="$label" '
    function ms(v) { if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 } if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 } sub(/s$/, "", v); return v * 1000 }
    { n[$1]++; r[$1, n[$1]] = $2; p[$1, n[$1]] = ms($3); bad[$1] += $4 }
    function med(a, s, k,   i, j, t, v) { for (i = 1; i <= k; i++) v[i] = a[s, i]; for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t } return v[int((k + 1) / 2)] }
    END {
      for (s in n) printf "app %s %s: %.0f req/s, p99 %.2f ms (medians of %d; non-2xx %d)\n", label, s, med(r, s, n[s]), med(p, s, n[s]), n[s], bad[s]
      printf "app %s new/old: req/s %.2f, p99 %.2f\n", label, med(r, "new", n["new"]) / med(r, "old", n["old"]), med(p, "new", n["new"]) / med(p, "old", n["old"])
    }' "$OUT/app-$label.txt" | sort
}
if [ "$ONLY" = all ] || [ "$ONLY" = app ]; then
  echo "# app, c64, $DURATION x $REPEATS interleaved"
  app_route public /api/permissions '["workspace:list"]'
  app_route keyed /api/workspaces '["workspace:list"]'
fi
echo "# full output: $OUT"
