"""One run, many followers (see sse.sh). Usage: sse_fanout.py BASE KEY PROJECT SERVER_PID N TICKS KEY1 [KEY2 …]"""
import asyncio, json, resource, statistics, sys, time, urllib.parse, urllib.request

BASE, KEY, PROJECT, PID, N, TICKS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
FOLLOW_KEYS = sys.argv[7:]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, N * 2 + 100)), hard))
host, port = urllib.parse.urlparse(BASE).hostname, urllib.parse.urlparse(BASE).port
peak_rss = 0.0


def rss():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


all_connected = [float("inf")]


async def follower(i, run, latencies, done, connected):
    key = FOLLOW_KEYS[i % len(FOLLOW_KEYS)]
    for attempt in range(20):
        try:
            r, w = await asyncio.open_connection(host, port)
            break
        except OSError:
            await asyncio.sleep(0.05 * (attempt + 1))
    else:
        return
    w.write(f"GET /api/agent/follow?run_id={run} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    status = await r.readline()
    if b" 200 " not in status:
        w.close(); return
    connected.append(i)
    got, buf, marker = 0, b"", b'"text":"t='
    while True:
        chunk = await r.read(65536)
        if not chunk:
            break
        now = time.time()
        buf += chunk
        # Whole events only: keep an unfinished tail for the next read.
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            continue
        events, buf = buf[:cut], buf[cut + 2:]
        start = 0
        while (k := events.find(marker, start)) >= 0:
            end = events.find(b" ", k + len(marker))
            sent = float(events[k + len(marker):end])
            if sent >= all_connected[0]:
                latencies.append((now - sent) * 1000)
            got += 1
            start = end
        if b"event: run.completed" in events or b"event: run.failed" in events or b"event: run.cancelled" in events:
            break
    done.append(got)
    w.close()


async def main():
    global peak_rss
    # Start the run with JSON, so it waits for nobody; the provider's first tick comes after TICK_MS.
    req = urllib.request.Request(BASE + "/api/agent/run", data=json.dumps({"project_id": PROJECT, "prompt": "tick"}).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", "Accept": "application/json"})
    base_rss = rss()
    latencies, done, connected = [], [], []
    tasks = []
    # The provider holds its first delta back (WAIT in sse.sh) while the followers connect.
    run = json.loads(urllib.request.urlopen(req, timeout=30).read())["run_id"]
    for i in range(N):
        tasks.append(asyncio.create_task(follower(i, run, latencies, done, connected)))
        if i % 200 == 199:
            await asyncio.sleep(0.01)
    while not all(t.done() for t in tasks):
        if len(connected) == N and all_connected[0] == float("inf"):
            all_connected[0] = time.time()
        peak_rss = max(peak_rss, rss())
        await asyncio.sleep(0.05)
    live = sorted(latencies)
    p = lambda q: live[min(len(live) - 1, int(q * (len(live) - 1)))] if live else float("nan")
    complete = sum(1 for g in done if g == TICKS)
    print(f"subscribers: {N} requested, {len(connected)} connected, {complete} received all {TICKS} deltas")
    print(f"live delivery latency over {len(live)} deliveries: p50 {p(0.50):.1f} ms  p99 {p(0.99):.1f} ms  max {live[-1] if live else 0:.1f} ms")
    print(f"server RSS: {base_rss:.1f} MiB before, {peak_rss:.1f} MiB peak")
    print(f"goals: p99 < 100 ms {'met' if p(0.99) < 100 else 'NOT met'}; RSS < 250 MiB {'met' if peak_rss < 250 else 'NOT met'}")
    if all_connected[0] == float("inf"):
        print("note: not every follower connected, so no delivery counted as live")


asyncio.run(main())
