"""A scripted OpenAI-compatible chat-completions server (streaming, tool calls, usage) for e2e checks
and benchmarks. Not a model: it answers by rule, so runs are repeatable.

Usage: fake_llm.py PORT [MODE]
  MODE agent (default): first turn records a finding and writes notes/agent.txt, second turn reads it,
                        third turn answers "done".
  MODE ui: as agent, but the first message carries markup (<img onerror>, a javascript: link) that a
                        browser must show as text.
  MODE secret: first turn runs `echo "$API_TOKEN"` and its base64 (run_command) and reads config.txt
                        (read_file), then answers "done". With FAKE_LLM_BODIES=file every request body
                        received is appended to that file (to prove what reached the provider).
  MODE probe: first turn runs `sh probe.sh agent` (run_command), reads ../other/secret.txt and writes
                        ../escape-tool.txt, reads and writes through symlinks out of the project (all must be
                        refused), then runs the project's tests;
                        then answers "done".
  MODE edit: first turn edits src/app.txt ("41" → "42", edit_file), then answers with the last tool
                        result (so a refusal shows in the run's summary).
  MODE mcp: first turn calls the registry tool tester.add (offered as tester__add) with 2 and 40, then
                        answers with its result.
  MODE notebook: first turn reads run.ipynb (read_notebook), the second runs its first code cell
                        (run_cell, the id taken from what it read), then answers with the cell's output.
  MODE ticker N MS [WAIT]: waits WAIT seconds (default 0), then streams N text deltas "t=<unix time>"
                        MS milliseconds apart, then stops (for fan-out latency measurements).
"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "agent"


def chunk(delta, finish=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def call(i, cid, name, args):
    return chunk({"tool_calls": [{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send_events(self, events, delay=0.0):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for e in events + ["[DONE]"]:
            if delay:
                time.sleep(delay)
                if isinstance(e, dict) and e.get("ticker"):
                    e = chunk({"content": f"t={time.time():.6f} "})
            data = e if isinstance(e, str) else json.dumps(e)
            payload = f"data: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.environ.get("FAKE_LLM_BODIES"):
            with open(os.environ["FAKE_LLM_BODIES"], "ab") as f:
                f.write(raw + b"\n")
        body = json.loads(raw or b"{}")
        msgs = body.get("messages", [])
        usage = {"choices": [], "usage": {"prompt_tokens": 200 + 10 * len(msgs), "completion_tokens": 20, "total_tokens": 0}}
        if MODE == "ticker":
            n, ms = int(sys.argv[3]), int(sys.argv[4])
            time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0)
            self.send_events([{"ticker": True}] * n + [chunk({}, "stop"), usage], delay=ms / 1000)
            return
        tools_done = sum(1 for m in msgs if m.get("role") == "tool")
        if MODE == "secret":
            if tools_done == 0:
                events = [call(0, "s1", "run_command", {"command": 'echo "token=$API_TOKEN"; printf %s "$API_TOKEN" | base64'}),
                          call(1, "s2", "read_file", {"path": "config.txt"}),
                          chunk({}, "tool_calls")]
            else:
                events = [chunk({"content": "done"}), chunk({}, "stop")]
            self.send_events(events + [usage])
            return
        if MODE == "notebook":
            tool_msgs = [m for m in msgs if m.get("role") == "tool"]
            if tools_done == 0:
                events = [call(0, "n1", "read_notebook", {"path": "run.ipynb"}), chunk({}, "tool_calls")]
            elif tools_done == 1:
                import re
                found = re.search(r"--- cell (\S+) \(code", str(tool_msgs[-1].get("content", "")))
                events = [call(0, "n2", "run_cell", {"path": "run.ipynb", "cell_id": found.group(1) if found else "none"}),
                          chunk({}, "tool_calls")]
            else:
                events = [chunk({"content": "cell said: " + str(tool_msgs[-1].get("content", ""))[:200]}), chunk({}, "stop")]
            self.send_events(events + [usage])
            return
        if MODE == "mcp":
            if tools_done == 0:
                events = [call(0, "m1", "tester__add", {"a": 2, "b": 40}), chunk({}, "tool_calls")]
            else:
                last = [m for m in msgs if m.get("role") == "tool"][-1].get("content", "")
                events = [chunk({"content": "the sum is " + str(last)[:100]}), chunk({}, "stop")]
            self.send_events(events + [usage])
            return
        if MODE == "edit":
            if tools_done == 0:
                events = [call(0, "e1", "edit_file", {"path": "src/app.txt", "old_string": "41", "new_string": "42"}),
                          chunk({}, "tool_calls")]
            else:
                last = [m for m in msgs if m.get("role") == "tool"][-1].get("content", "")
                events = [chunk({"content": "done: " + str(last)[:200]}), chunk({}, "stop")]
            self.send_events(events + [usage])
            return
        if MODE == "probe":
            if tools_done == 0:
                events = [call(0, "p1", "run_command", {"command": "sh probe.sh agent"}),
                          call(1, "p2", "read_file", {"path": "../other/secret.txt"}),
                          call(2, "p3", "write_file", {"path": "../escape-tool.txt", "content": "x"}),
                          call(3, "p4", "run_tests", {}),
                          call(4, "p5", "read_file", {"path": "link-out.txt"}),
                          call(5, "p6", "write_file", {"path": "link-dir/escape-tool.txt", "content": "x"}),
                          chunk({}, "tool_calls")]
            else:
                events = [chunk({"content": "done"}), chunk({}, "stop")]
            self.send_events(events + [usage])
            return
        if tools_done == 0:
            intro = "Recording what I see." if MODE != "ui" else (
                "Recording **what I see**. <img src=x onerror=\"window.__xss=4\"> [click](javascript:window.__xss=5)")
            events = [chunk({"content": intro}),
                      call(0, "c1", "record_finding", {"path": "README.md", "line": 1, "claim": "the README starts with hello", "evidence": "hello"}),
                      call(1, "c2", "write_file", {"path": "notes/agent.txt", "content": "written by the agent\n"}),
                      chunk({}, "tool_calls")]
        elif tools_done == 2:
            events = [call(0, "c3", "read_file", {"path": "notes/agent.txt"}), chunk({}, "tool_calls")]
        else:
            events = [chunk({"content": "done"}), chunk({}, "stop")]
        self.send_events(events + [usage])


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
