/// The small Python program Kiln ships to drive a Jupyter kernel: it starts the kernel with
/// `jupyter_client` and speaks JSON lines with Kiln over stdin/stdout. Written to the data dir at
/// start and run in the project's sandbox with the notebook Python (`--notebook-python`).
///
/// Kiln → bridge: `{"op": "execute", "id", "code"}`, `{"op": "interrupt"}`, `{"op": "restart"}`,
/// `{"op": "shutdown"}`. Bridge → Kiln: `{"event": "ready", "language"}`, then per execution
/// `started {execution_count}`, `stream {name, text}`, `display_data`/`execute_result {data, metadata}`,
/// `error {ename, evalue, traceback}`, `done {status, execution_count}`; `restarted`, `dead {reason}`,
/// `fatal {message}` (it could not start: the message names what is missing).
enum KernelBridge {
    static let fileName = "kiln_kernel_bridge.py"

    static let source = #"""
        import json, os, sys, threading, queue, traceback

        out_lock = threading.Lock()

        def send(obj):
            line = json.dumps(obj, separators=(",", ":"), default=str)
            with out_lock:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

        try:
            from jupyter_client.manager import KernelManager
        except Exception as e:
            send({"event": "fatal",
                  "message": "jupyter_client is missing (pip install jupyter_client ipykernel): %s" % e})
            sys.exit(3)

        kernel_name = sys.argv[1] if len(sys.argv) > 1 else "python3"
        try:
            km = KernelManager(kernel_name=kernel_name, transport="ipc")
            km.start_kernel()
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
        except Exception as e:
            send({"event": "fatal", "message": "the kernel %s could not start: %s" % (kernel_name, str(e)[:300])})
            sys.exit(4)

        def language():
            try:
                return km.kernel_spec.language
            except Exception:
                return ""

        send({"event": "ready", "language": language()})

        ops = queue.Queue()

        def reader():
            for line in sys.stdin:
                try:
                    ops.put(json.loads(line))
                except Exception:
                    pass
            ops.put({"op": "shutdown"})

        threading.Thread(target=reader, daemon=True).start()

        def execute(req):
            rid = req.get("id")
            msg_id = kc.execute(req.get("code", ""), store_history=True, allow_stdin=False)
            count = None
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=1)
                except queue.Empty:
                    if not km.is_alive():
                        send({"event": "dead", "id": rid, "reason": "the kernel died"})
                        return
                    if not ops.empty():
                        peek = ops.queue[0]
                        if peek.get("op") == "interrupt":
                            ops.get()
                            km.interrupt_kernel()
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                t = msg["msg_type"]
                c = msg["content"]
                if t == "execute_input":
                    count = c.get("execution_count")
                    send({"event": "started", "id": rid, "execution_count": count})
                elif t == "stream":
                    # A kernel batches output; large batches go out in 64 KiB pieces.
                    text = c.get("text", "")
                    for i in range(0, max(len(text), 1), 65536):
                        send({"event": "stream", "id": rid, "name": c.get("name"), "text": text[i:i + 65536]})
                elif t in ("display_data", "execute_result", "update_display_data"):
                    ev = {"event": "execute_result" if t == "execute_result" else "display_data", "id": rid,
                          "data": c.get("data", {}), "metadata": c.get("metadata", {})}
                    if t == "execute_result":
                        ev["execution_count"] = c.get("execution_count")
                    send(ev)
                elif t == "error":
                    send({"event": "error", "id": rid, "ename": c.get("ename"), "evalue": c.get("evalue"),
                          "traceback": c.get("traceback", [])})
                elif t == "status" and c.get("execution_state") == "idle":
                    break
            status = "ok"
            try:
                reply = kc.get_shell_msg(timeout=10)
                status = reply["content"].get("status", "ok")
                count = reply["content"].get("execution_count", count)
            except Exception:
                pass
            send({"event": "done", "id": rid, "status": status, "execution_count": count})

        while True:
            op = ops.get()
            kind = op.get("op")
            try:
                if kind == "execute":
                    execute(op)
                elif kind == "interrupt":
                    km.interrupt_kernel()
                elif kind == "restart":
                    km.restart_kernel(now=True)
                    kc.wait_for_ready(timeout=60)
                    send({"event": "restarted"})
                elif kind == "shutdown":
                    break
            except Exception as e:
                send({"event": "dead", "id": op.get("id"), "reason": str(e)[:300]})
        try:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        except Exception:
            pass
        """#
}
