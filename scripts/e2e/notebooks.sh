#!/usr/bin/env bash
# Notebooks with outside tools against `kiln serve`: a notebook made and edited with curl (cells
# added, changed, moved, removed, each with the ETag as If-Match) validates with nbformat
# (`validate` and `iter_validate`); a 4.4 notebook written by nbformat without cell ids opens, is
# edited and saved as 4.5 with every metadata field and output it had; a stale If-Match is 412 and
# an edit made outside Kiln is noticed. Then a real ipykernel (in the sandbox): x = 21 then x * 2
# (execute_result 42) over SSE, stdout and stderr, a PNG via IPython.display.Image, a raised error
# with its traceback, a time.sleep(60) interrupted within 2 s, a restart that loses the state, the data
# dir and Kiln's /proc/<pid>/environ unreadable; the saved file validates and `jupyter nbconvert
# --execute` re-runs it.
# Called by scripts/e2e/run.sh (which provides the venv on PATH). BIN and OUT come from there.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=${BIN:?}; OUT=${OUT:?}
J='Content-Type: application/json'
PW='a long enough password'
WORK=$OUT/notebooks
rm -rf "$WORK"; mkdir -p "$WORK/projects/nb"
PASSED=0; FAILED=0
# A 4.4 notebook as nbformat wrote them before cell ids, with custom metadata and an output.
python3 - "$WORK/projects/nb/old.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.v4.new_notebook()
nb.nbformat_minor = 4
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["x_team"] = {"owner": "data", "tags": ["a", "b"]}
code = nbformat.v4.new_code_cell("x = 21\nx * 2", execution_count=1,
    outputs=[nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1)])
code.metadata["collapsed"] = False
nb.cells = [nbformat.v4.new_markdown_cell("# Old"), code]
for c in nb.cells:
    c.pop("id", None)
with open(sys.argv[1], "w") as f:
    f.write(nbformat.writes(nb, version=nbformat.NO_CONVERT))
PY
PORT=$(free_port)
B=http://127.0.0.1:$PORT
# The venv and the Python it was made from are shown to kernels by Kiln itself (no --sandbox-mount).
VENV=$(python3 -c 'import sys; print(sys.prefix)')
LLM_PORT=$(free_port)
python3 "$(dirname "${BASH_SOURCE[0]}")/fake_llm.py" "$LLM_PORT" notebook > "$OUT/notebooks-llm.log" 2>&1 &
LLM=$!
"$BIN/kiln" serve --port "$PORT" --data-dir "$WORK/data" --projects-root "$WORK/projects" \
  --notebook-python "$VENV/bin/python" --kernels-per-user 2 --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model fake-model \
  > "$OUT/notebooks-serve.out" 2> "$OUT/notebooks-serve.log" &
PID=$!
trap 'kill $PID $LLM 2>/dev/null; wait 2>/dev/null' EXIT
wait_http "$B/healthz" || { echo "kiln serve did not start"; exit 1; }
setup_owner "$OUT/notebooks-serve.out" "$B" owner@example.com "$PW"
CSRF=$(login_csrf "$B" owner@example.com "$PW" "$WORK/jar")
S=(-b "$WORK/jar" -H "X-CSRF-Token: $CSRF" -H "$J")
WS=$(curl -s -b "$WORK/jar" "$B/api/workspaces" | jget 'd["items"][0]["id"]')
PRJ=$(curl -s "${S[@]}" -d "{\"ws_id\":\"$WS\",\"path\":\"$WORK/projects/nb\"}" "$B/api/project/load" | jget 'd["id"]')
# call METHOD PATH [BODY]: prints the body, and the ETag to $WORK/etag.
call() {
  local extra=(); [ -n "${ETAG:-}" ] && extra=(-H "If-Match: $ETAG")
  curl -s -D "$WORK/h" "${S[@]}" "${extra[@]}" -X "$1" ${3:+-d "$3"} "$B$2"
  grep -i '^etag:' "$WORK/h" | tr -d '\r' | awk '{ print $2 }' > "$WORK/etag"
}
ETAG= call POST /api/notebook "{\"project_id\":\"$PRJ\",\"path\":\"made/new.ipynb\"}" > "$WORK/created.json"
NB=$(jget 'd["id"]' < "$WORK/created.json"); ETAG=$(cat "$WORK/etag")
C1=$(call POST "/api/notebook/$NB/cells" '{"cell_type":"code","source":"x = 21"}' | jget 'd["id"]'); ETAG=$(cat "$WORK/etag")
C2=$(call POST "/api/notebook/$NB/cells" '{"cell_type":"markdown","source":"# Notes\nwith two lines"}' | jget 'd["id"]'); ETAG=$(cat "$WORK/etag")
C3=$(call POST "/api/notebook/$NB/cells" '{"cell_type":"raw","source":"raw"}' | jget 'd["id"]'); ETAG=$(cat "$WORK/etag")
call PATCH "/api/notebook/$NB/cells/$C1" '{"source":"x = 21\nx * 2","metadata":{"tags":["answer"]}}' > /dev/null; ETAG=$(cat "$WORK/etag")
call POST "/api/notebook/$NB/cells/$C2/move" '{"index":0}' > /dev/null; ETAG=$(cat "$WORK/etag")
OLD_ETAG=$ETAG
call DELETE "/api/notebook/$NB/cells/$C3" > /dev/null; ETAG=$(cat "$WORK/etag")
VALID=$(python3 - "$WORK/projects/nb/made/new.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=nbformat.NO_CONVERT)
nbformat.validate(nb)
problems = list(nbformat.validator.iter_validate(nb))
print(nb.nbformat, nb.nbformat_minor, len(nb.cells), nb.cells[0].cell_type, repr(nb.cells[1].source), len(problems))
PY
)
expect "a notebook made and edited with curl validates with nbformat (4.5, 2 cells, no problems)" "4 5 2 markdown 'x = 21\\nx * 2' 0" "$VALID"
expect "a stale If-Match is 412" 412 "$(curl -s -o /dev/null -w '%{http_code}' "${S[@]}" -H "If-Match: $OLD_ETAG" -X PATCH -d '{"source":"y"}' "$B/api/notebook/$NB/cells/$C1")"

# The 4.4 notebook: found after a rescan, opened, edited, saved as 4.5 with everything it had.
curl -s -o /dev/null "${S[@]}" -H 'Accept: application/json' -d "{\"project_id\":\"$PRJ\"}" "$B/api/project/rescan"
OLD=""
for _ in $(seq 1 300); do
  OLD=$(curl -s -b "$WORK/jar" "$B/api/notebook?project_id=$PRJ" | jget 'next((i["id"] for i in d["items"] if i["path"] == "old.ipynb"), "")')
  [ -n "$OLD" ] && break; sleep 0.1
done
check "a 4.4 notebook is listed" test -n "$OLD"
ETAG= call GET "/api/notebook/$OLD" > "$WORK/old.json"; ETAG=$(cat "$WORK/etag")
expect "its cells get ids to edit by" "cell-1 cell-2" "$(jget '" ".join(c["id"] for c in d["cells"])' < "$WORK/old.json")"
call PATCH "/api/notebook/$OLD/cells/cell-1" '{"source":"# Old, edited in Kiln"}' > /dev/null
KEPT=$(python3 - "$WORK/projects/nb/old.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=nbformat.NO_CONVERT)
nbformat.validate(nb)
c = nb.cells[1]
print(nb.nbformat_minor, nb.metadata["x_team"]["tags"], nb.cells[0].source, c.metadata["collapsed"], c.outputs[0]["data"]["text/plain"], c.execution_count, len(list(nbformat.validator.iter_validate(nb))))
PY
)
expect "… saved as 4.5, valid, with its metadata and outputs" "5 ['a', 'b'] # Old, edited in Kiln False 42 1 0" "$KEPT"
sed -i 's/edited in Kiln/edited in JupyterLab/' "$WORK/projects/nb/old.ipynb"
expect "an edit made outside Kiln is noticed (the old ETag is 412)" 412 "$(curl -s -o /dev/null -w '%{http_code}' "${S[@]}" -H "If-Match: $(cat "$WORK/etag")" -X PATCH -d '{"source":"z"}' "$B/api/notebook/$OLD/cells/cell-2")"
check "… and reading it again shows the outside edit" sh -c "curl -s -b '$WORK/jar' '$B/api/notebook/$OLD' | grep -q 'edited in JupyterLab'"

# --- Running cells on a real ipykernel, in the sandbox ---
K=$(ETAG= call POST /api/notebook "{\"project_id\":\"$PRJ\",\"path\":\"run.ipynb\"}" | jget 'd["id"]')
add() { ETAG= call POST "/api/notebook/$K/cells" "$(python3 -c 'import json,sys; print(json.dumps({"cell_type":"code","source":sys.argv[1]}))' "$1")" | jget 'd["id"]'; }
run_json() { curl -s "${S[@]}" -H 'Accept: application/json' -X POST "$B/api/notebook/run/$K/$1"; }
X1=$(add 'x = 21'); X2=$(add 'x * 2')
X3=$(add 'import sys; print("to out"); print("to err", file=sys.stderr)')
X4=$(add $'from IPython.display import Image\nimport base64\nImage(data=base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))')
X5=$(add 'raise ValueError("boom")')
X6=$(add 'import time; time.sleep(60)')
X7=$(add "open('$WORK/data/kiln.db', 'rb').read(10)")
X8=$(add "open('/proc/$PID/environ', 'rb').read(10)")
expect "run x = 21 (json)" ok "$(run_json "$X1" | jget 'd["status"]')"
curl -sN "${S[@]}" -X POST "$B/api/notebook/run/$K/$X2" > "$WORK/x2.sse"
check "x * 2 streams cell.started, execute_result 42 and cell.completed (SSE)" sh -c "grep -q '^event: cell.started' '$WORK/x2.sse' && grep -q '\"text/plain\":\"42\"' '$WORK/x2.sse' && grep -q '^event: cell.completed' '$WORK/x2.sse'"
expect "stdout and stderr come as streams" "stdout:to out|stderr:to err" "$(run_json "$X3" | jget '"|".join(o["name"] + ":" + o["text"].strip() for o in d["outputs"])')"
expect "a PNG comes as an image/png bundle" image/png "$(run_json "$X4" | jget '",".join(k for o in d["outputs"] for k in o.get("data", {}) if k.startswith("image"))')"
expect "a raised error comes with its name and traceback" "ValueError True" "$(run_json "$X5" | jget 'd["outputs"][0]["ename"] + " " + str(len(d["outputs"][0]["traceback"]) > 0)')"
(sleep 1; curl -s -o /dev/null "${S[@]}" -X POST "$B/api/notebook/$K/interrupt") &
START=$(date +%s%N)
expect "time.sleep(60) is interrupted (KeyboardInterrupt)" KeyboardInterrupt "$(run_json "$X6" | jget 'd["outputs"][0]["ename"]')"
check "… within 2 s of the interrupt" test $(( ($(date +%s%N) - START) / 1000000 )) -lt 3500
expect "the data dir is not there in the kernel's sandbox" FileNotFoundError "$(run_json "$X7" | jget 'd["outputs"][0]["ename"]')"
expect "nor Kiln's /proc/<pid>/environ" FileNotFoundError "$(run_json "$X8" | jget 'd["outputs"][0]["ename"]')"
expect "the kernel says idle" idle "$(curl -s -b "$WORK/jar" "$B/api/notebook/$K/kernel" | jget 'd["state"]')"
curl -s -o /dev/null "${S[@]}" -X POST "$B/api/notebook/$K/restart"
expect "after a restart the state is gone" NameError "$(run_json "$X2" | jget 'd["outputs"][0]["ename"]')"
SAVED=$(python3 - "$WORK/projects/nb/run.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=nbformat.NO_CONVERT)
nbformat.validate(nb)
kinds = [o["output_type"] for c in nb.cells for o in c.get("outputs", [])]
print(len(list(nbformat.validator.iter_validate(nb))), nb.cells[2].outputs[0]["name"], "image/png" in nb.cells[3].outputs[0]["data"], "error" in kinds)
PY
)
expect "the saved file validates, with its outputs in nbformat's shapes" "0 stdout True True" "$SAVED"
# An agent run reads the notebook and runs a cell (fake_llm.py mode notebook), receipted like other tools.
curl -sN "${S[@]}" -d "{\"project_id\":\"$PRJ\",\"prompt\":\"run the first cell\"}" "$B/api/agent/run" > "$WORK/agent.sse"
RUN=$(grep -m1 -o '"run_id":"run_[A-Za-z0-9]*"' "$WORK/agent.sse" | cut -d'"' -f4)
check "agent: read_notebook and run_cell were called" sh -c "grep -q '\"tool\":\"read_notebook\"' '$WORK/agent.sse' && grep -q '\"tool\":\"run_cell\"' '$WORK/agent.sse'"
check "agent: the cell ran on the kernel (status ok)" grep -q 'status: ok, execution count' "$WORK/agent.sse"
sleep 0.5
expect "agent: both calls are in its receipt" "read_notebook,run_cell" "$(curl -s -b "$WORK/jar" "$B/api/receipts/$RUN" | jget '",".join(c["tool"] for c in d["tool_calls"])')"
# The 4.4 notebook runs too, and keeps what it had.
expect "the 4.4 notebook's code cell runs (42)" 42 "$(curl -s "${S[@]}" -H 'Accept: application/json' -X POST "$B/api/notebook/run/$OLD/cell-2" | jget 'd["outputs"][0]["data"]["text/plain"]')"
KEPT2=$(python3 - "$WORK/projects/nb/old.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=nbformat.NO_CONVERT)
nbformat.validate(nb)
c = nb.cells[1]
print(nb.metadata["x_team"]["owner"], c.metadata["collapsed"], c.outputs[0]["data"]["text/plain"], c.execution_count is not None)
PY
)
expect "… saved with its metadata and the new output" "data False 42 True" "$KEPT2"
# Kernels per user (2 here; run.ipynb and old.ipynb hold them): a third notebook's run is refused.
K2=$(ETAG= call POST /api/notebook "{\"project_id\":\"$PRJ\",\"path\":\"k2.ipynb\"}" | jget 'd["id"]')
Y2=$(ETAG= call POST "/api/notebook/$K2/cells" '{"cell_type":"code","source":"1"}' | jget 'd["id"]')
expect "a third kernel is refused (429) past --kernels-per-user 2" 429 "$(curl -s -o /dev/null -w '%{http_code}' "${S[@]}" -H 'Accept: application/json' -X POST "$B/api/notebook/run/$K2/$Y2")"
# nbconvert re-runs it (without the cells that fail or wait on purpose).
python3 - "$WORK/projects/nb/run.ipynb" "$WORK/rerun.ipynb" <<'PY'
import sys, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells = nb.cells[:4]
nbformat.write(nb, sys.argv[2])
PY
check "jupyter nbconvert --to notebook --execute re-runs the saved cells" jupyter nbconvert --to notebook --execute "$WORK/rerun.ipynb" --output "$WORK/rerun-out.ipynb"

echo "notebooks e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
