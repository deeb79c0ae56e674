#!/usr/bin/env bash
# Runs the Kiln server: installs the two system libraries (and bubblewrap, the sandbox) if missing,
# builds in release mode, and starts `kiln serve` on 127.0.0.1:8080 with its data in ./.kiln (any
# `kiln serve` option may follow, e.g. scripts/run.sh --port 9000). On first start it prints a one-time setup URL.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/lib/deps.sh
ensure_packages libsqlite3-dev libssl-dev
# Commands, tests and terminals users start run in a bubblewrap sandbox (kiln serve --sandbox).
ensure_optional_packages bubblewrap
swift build -c release --product kiln
exec "$ROOT/.build/release/kiln" serve "$@"
