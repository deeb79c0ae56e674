"""Notebook round trips and streaming: see scripts/bench/notebook.sh.

Usage: notebook_bench.py KILN_URL KEY PROJECT KILN_PID RUNS MB
"""
import http.client, json, statistics, sys, threading, time, urllib.parse
from jupyter_client.manager import KernelManager

BASE, KEY, PRJ, PID, RUNS, MB = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
u = urllib.parse.urlsplit(BASE)
H = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def call(method, path, body=None, accept="application/json"):
    conn.request(method, path, json.dumps(body) if body is not None else None, dict(H, Accept=accept))
    r = conn.getresponse()
    data = r.read()
    assert r.status < 300, (r.status, data[:300])
    return json.loads(data) if data else {}


def rss_mb():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


nb = call("POST", "/api/notebook", {"project_id": PRJ, "path": "bench.ipynb"})["id"]
cell = call("POST", f"/api/notebook/{nb}/cells", {"cell_type": "code", "source": "pass"})["id"]
big = call("POST", f"/api/notebook/{nb}/cells", {"cell_type": "code", "source":
            f"import sys\nchunk = 'x' * 1023 + '\\n'\nfor i in range({MB} * 1024):\n    sys.stdout.write(chunk)\n"})["id"]
for _ in range(10):
    call("POST", f"/api/notebook/run/{nb}/{cell}")
kiln = []
for _ in range(RUNS):
    t = time.perf_counter()
    r = call("POST", f"/api/notebook/run/{nb}/{cell}")
    kiln.append((time.perf_counter() - t) * 1000)
    assert r["status"] == "ok", r

km = KernelManager(kernel_name="python3", transport="ipc")
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=60)


def direct_once():
    msg_id = kc.execute("pass")
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    kc.get_shell_msg(timeout=30)


for _ in range(10):
    direct_once()
direct = []
for _ in range(RUNS):
    t = time.perf_counter()
    direct_once()
    direct.append((time.perf_counter() - t) * 1000)
kc.stop_channels()
km.shutdown_kernel(now=True)

print(f"cell `pass` through Kiln:          p50 {statistics.median(kiln):6.2f} ms  p99 {pct(kiln, 0.99):6.2f} ms  ({RUNS} runs)")
print(f"cell `pass` through jupyter_client: p50 {statistics.median(direct):6.2f} ms  p99 {pct(direct, 0.99):6.2f} ms")
print(f"added by Kiln: p50 {statistics.median(kiln) - statistics.median(direct):+.2f} ms (goal < 5 ms)")

# Streaming: the SSE stream of a cell printing MB megabytes, while the server's RSS is sampled.
peak = [rss_mb()]
done = threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.05)


threading.Thread(target=sample, daemon=True).start()
stream = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
t = time.perf_counter()
stream.request("POST", f"/api/notebook/run/{nb}/{big}", None, dict(H, Accept="text/event-stream"))
r = stream.getresponse()
got = 0
event = None
for raw in r:
    line = raw.decode("utf-8", "replace").rstrip("\n")
    if line.startswith("event: "):
        event = line[7:]
    elif line.startswith("data: ") and event == "stream":
        got += len(json.loads(line[6:])["text"])
    elif line.startswith("data: ") and event == "cell.completed":
        break
secs = time.perf_counter() - t
done.set()
print(f"{MB} MB printed: {got / 1e6:.1f} MB of stream text over SSE in {secs:.2f} s = {got / 1e6 / secs:.1f} MB/s; "
      f"server peak RSS {peak[0]:.0f} MiB (goal < 150)")
