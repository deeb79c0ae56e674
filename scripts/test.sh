#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it):
#   1. installs what the tests need (Debian packages; Python tools go into a venv under .build/),
#   2. checks the architecture (scripts/check-architecture.sh), builds everything with warnings as errors,
#   3. starts a throwaway PostgreSQL 15 under .build/pg (SCRAM, TLS) and runs `swift test` (unit and
#      in-process integration tests on real sockets; the PostgreSQL driver's against that server),
#   4. runs the end-to-end checks in scripts/e2e/ against the real binaries with outside clients,
#   5. runs each fuzz target briefly (FUZZ_SECONDS, default 15; 0 skips).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
. scripts/lib/postgres.sh
ensure_packages libsqlite3-dev libssl-dev curl openssl ca-certificates
ensure_python_venv
ensure_packages chromium chromium-driver git
# User processes run in bubblewrap; the test-runner tests build a pytest and a Makefile project inside it.
ensure_packages bubblewrap python3-pytest make
ensure_optional_packages universal-ctags
ensure_optional_packages prometheus qrencode
# The shell e2e checks drive a real sshd.
ensure_optional_packages openssh-server openssh-client
# The Python tools (websockets, pytest for the test-runner tests…) live in one venv on PATH.
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/e2e/requirements.txt
export PATH="$VENV/bin:$PATH"

echo "== architecture"
bash scripts/check-architecture.sh
FLAGS=(-Xswiftc -warnings-as-errors)
echo "== build (warnings are errors)"
swift build --build-tests "${FLAGS[@]}"
echo "== swift test"
start_test_postgres
trap stop_test_postgres EXIT
set +e
swift test "${FLAGS[@]}" > .build/swift-test.log 2>&1
rc=$?
if [ $rc = 0 ]; then
  # The same suite with every test app on a PostgreSQL database of its own (the driver's own tests,
  # which restart the server, ran in the first pass).
  echo "== swift test on PostgreSQL"
  KILN_TEST_STORE=postgres swift test "${FLAGS[@]}" --skip PostgresDriverTests > .build/swift-test-pg.log 2>&1
  rc=$?
  [ $rc = 0 ] || cp .build/swift-test-pg.log .build/swift-test.log
  grep -aoE 'Test run with [0-9]+ tests? .*' .build/swift-test-pg.log | tail -1 | sed 's/^/PostgreSQL: /'
fi
set -e
grep -avE '^(Test Case|Test Suite|◇|✔ Test [a-z]|\[[0-9]+/[0-9]+\]|\{")' .build/swift-test.log | tail -40
if [ $rc != 0 ]; then
  # CI shows only the end of the output: repeat what failed last, so it is on screen.
  echo "== what failed"
  grep -aE -A4 '✘|recorded an issue|error: |Fatal error|Test Case .* failed' .build/swift-test.log \
    | grep -avE '^\{"' | tail -60 || true
  echo "swift test failed (exit $rc); full log: .build/swift-test.log"
  exit 1
fi
UNIT=$(grep -aoE 'Test run with [0-9]+ tests?' .build/swift-test.log | grep -oE '[0-9]+' | tail -1)
[ -n "$UNIT" ] || { echo "swift test ran no tests"; exit 1; }
UNIT_PG=$(grep -aoE 'Test run with [0-9]+ tests?' .build/swift-test-pg.log | grep -oE '[0-9]+' | tail -1)
[ -n "$UNIT_PG" ] || { echo "swift test on PostgreSQL ran no tests"; exit 1; }
UNIT=$((UNIT + UNIT_PG))
echo "== end-to-end"
BIN="$ROOT/.build/debug" scripts/e2e/run.sh | tee .build/e2e.log
E2E=$(awk '/^e2e:/ { print $2 }' .build/e2e.log)
if [ "${FUZZ_SECONDS:-15}" != 0 ]; then
  echo "== fuzz smoke (${FUZZ_SECONDS:-15}s per target)"
  scripts/fuzz/run.sh all "${FUZZ_SECONDS:-15}"
fi
echo "tests: $((UNIT + E2E)) passed, 0 failed"
