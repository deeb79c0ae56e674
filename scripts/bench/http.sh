#!/usr/bin/env bash
# HTTP benchmark: kiln-bench (release) against the Hummingbird peer in ../shared/bench, interleaved
# in one run on this machine, then Kiln/Hummingbird ratios per route and concurrency, and an idle
# keep-alive memory check.
#   scripts/bench/http.sh                 # REPEATS=3 DURATION=10s by default
#   REPEATS=1 DURATION=5s IDLE_CONNS=10000 scripts/bench/http.sh
# Needs wrk and curl (installed with apt-get when missing and running as root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
PEERS=$SHARED/bench
export REPEATS=${REPEATS:-3} DURATION=${DURATION:-10s}
IDLE_CONNS=${IDLE_CONNS:-10000}
OUT=${OUT:-$ROOT/.build/bench}
mkdir -p "$OUT"

for tool in wrk curl python3; do
  if ! command -v "$tool" >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "http.sh: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
    apt-get install -y -qq "$tool" >/dev/null
  fi
done
[ -x "$PEERS/run-peers.sh" ] || { echo "http.sh: no peer benchmarks at $PEERS (set SHARED=)" >&2; exit 1; }

# KILN_BENCH_BIN: another build to measure (scripts/bench/compare.sh measures an older one too).
if [ -z "${KILN_BENCH_BIN:-}" ]; then (cd "$ROOT" && swift build -c release --product kiln-bench >/dev/null); fi
BIN=${KILN_BENCH_BIN:-$ROOT/.build/release/kiln-bench}
bash "$PEERS/run-peers.sh" build hb >&2

RAW=$OUT/http-$(date +%Y%m%d-%H%M%S).txt
OURS_CMD="$BIN --host 127.0.0.1" OURS_PORT=18090 OURS_LABEL=kiln bash "$PEERS/run-peers.sh" peers kiln hb | tee "$RAW"
echo
bash "$PEERS/summarize.sh" "$RAW" | tee "$RAW.summary"
echo
echo "# Kiln / Hummingbird (medians): req/s ratio (goal >= 1.00), p99 ratio (goal <= 1.00), server CPU per request ratio"
awk '
  # Columns counted from the end: the per-pass list before them varies in length.
  ($1 == "kiln" || $1 == "hb") && $2 !~ /rss/ {
    k = $2 " " $3; keys[k] = 1
    rps[$1 " " k] = $(NF - 6); p99[$1 " " k] = $(NF - 4); cpu[$1 " " k] = $(NF - 3)
  }
  END {
    for (k in keys) {
      split(k, f, " ")
      r = (rps["hb " k] > 0) ? rps["kiln " k] / rps["hb " k] : 0
      p = (p99["hb " k] > 0) ? p99["kiln " k] / p99["hb " k] : 0
      c = (cpu["hb " k] + 0 > 0) ? cpu["kiln " k] / cpu["hb " k] : 0
      printf "ratio %-6s c%-4s req/s %.2f  p99 %.2f  cpu/req %.2f   (kiln %s req/s p99 %s ms; hb %s req/s p99 %s ms)\n", f[1], f[2], r, p, c, rps["kiln " k], p99["kiln " k], rps["hb " k], p99["hb " k]
    }
  }' "$RAW.summary" | sort
grep -E '^kiln rss_after_kb' "$RAW" | awk '{ printf "kiln RSS after run: %.1f MiB (goal < 64)\n", $3 / 1024 }' | tail -1

# Idle keep-alive connections: open IDLE_CONNS connections, each after one request, and read RSS.
echo
"$BIN" --host 127.0.0.1 --port 18091 >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18091/hello && break; sleep 0.1; done
python3 - "$IDLE_CONNS" "$PID" <<'PY'
import resource, socket, sys, time
n, pid = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
base = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 18091))
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
ok = 0
for s in socks:
    data = b""
    while not data.endswith(b"Hello, world!"):
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    ok += data.endswith(b"Hello, world!")
time.sleep(1)
print(f"idle keep-alive: {ok}/{n} connections answered and held open; RSS {rss():.1f} MiB (idle before {base:.1f} MiB; goal < 200)")
PY
