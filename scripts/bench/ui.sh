#!/usr/bin/env bash
# Workspace UI page weight and speed, read from Chromium's performance entries (ui_bench.py):
# first-load bytes of the app shell, the file tree of a 30,000-file project, a 5 MB file's first
# screen, and a common word's search results painted; beside an empty page load as the baseline.
#   scripts/bench/ui.sh        (RUNS=5 by default; FILES=30000)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/scripts/lib/kiln_server.sh"
. "$ROOT/scripts/lib/deps.sh"
ensure_packages chromium chromium-driver
VENV=$ROOT/.build/e2e-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/e2e/requirements.txt"
(cd "$ROOT" && swift build -c release --product kiln >/dev/null)
WORK=$ROOT/.build/bench/ui
mkdir -p "$WORK"
FILES=${FILES:-30000}
# The project: FILES small source files in 30 folders of 100 sub-folders, and one 5 MB text file.
if [ "$(cat "$WORK/files" 2>/dev/null)" != "$FILES" ]; then
  rm -rf "$WORK/projects"
  python3 - "$WORK/projects/big" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"pkg{i % 30:02d}", f"mod{(i // 30) % 100:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i}.py"), "w") as f:
        f.write(f"def function_{i}(x):\n    value = x * {i}\n    return value\n")
with open(os.path.join(root, "big.txt"), "w") as f:
    line = 0
    while f.tell() < 5 * 1024 * 1024:
        line += 1
        f.write(f"{line:07d} the quick brown fox jumps over the lazy dog, return to sender\n")
PY
  echo "$FILES" > "$WORK/files"
fi
start_kiln "$ROOT/.build/release/kiln" '["workspace:list","project:read","project:write"]' --projects-root "$WORK/projects"
trap stop_kiln EXIT
PRJ=$(curl -s -H "$AUTH" -H 'Content-Type: application/json' -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/big\"}" "$B/api/project/load" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# Index before measuring (the first search would otherwise pay for it).
curl -s -o /dev/null -H "$AUTH" "$B/api/project/search?project_id=$PRJ&q=return&limit=1"
echo "project: $FILES files + a 5 MB file, indexed"
SE_OFFLINE=true "$VENV/bin/python" "$ROOT/scripts/bench/ui_bench.py" "$B" bench@example.com "benchmark password" "$WS" "$PRJ" big.txt "${RUNS:-5}"
