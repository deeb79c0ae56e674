#!/usr/bin/env bash
# Builds and runs the libFuzzer targets against the KilnHTTP sources.
#   scripts/fuzz/run.sh [parser|websocket|all] [SECONDS]   (default: all, 600 s each)
# Prints the number of executions per target; exits non-zero on a crash (the input is kept as crash-*).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGETS=${1:-all}
SECONDS_EACH=${2:-600}
OUT=.build/fuzz
mkdir -p "$OUT"
[ "$TARGETS" = all ] && TARGETS="parser websocket"

clang -c -O1 -fsanitize=fuzzer-no-link,address -I Sources/CShims/include Sources/CShims/shims.c -o "$OUT/shims.o"
for t in $TARGETS; do
  swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name KilnHTTP -swift-version 6 \
    -I Sources/CShims/include -I Sources/COpenSSL \
    $(find Sources/KilnHTTP -name '*.swift') "scripts/fuzz/$t.swift" "$OUT/shims.o" \
    -lssl -lcrypto -lutil -o "$OUT/fuzz-$t" 2> "$OUT/build-$t.log" || { cat "$OUT/build-$t.log"; exit 1; }
  corpus="$OUT/corpus-$t"
  mkdir -p "$corpus"
  cp scripts/fuzz/seeds/$t/* "$corpus/" 2>/dev/null || true
  echo "== fuzz-$t for ${SECONDS_EACH}s"
  "$OUT/fuzz-$t" -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" "$corpus" \
    2> "$OUT/fuzz-$t.log" || { tail -40 "$OUT/fuzz-$t.log"; exit 1; }
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$OUT/fuzz-$t.log" | sed "s/^/$t /"
done
