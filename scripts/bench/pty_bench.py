"""Keystroke echo latency of Kiln terminals beside a plain forkpty baseline, and server memory with
many terminals open (see pty.sh; throughput is measured by pty_throughput.c).

Usage: pty_bench.py BASE_URL API_KEY SERVER_PID ROUNDS TERMINALS
"""
import asyncio, json, os, pty, select, statistics, sys, time, tty, urllib.request
import websockets

BASE, KEY, SERVER_PID, ROUNDS, TERMINALS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
AUTH = {"Authorization": f"Bearer {KEY}"}


def spawn():
    req = urllib.request.Request(BASE + "/api/pty/spawn", data=b'{"cols":120,"rows":40}', method="POST",
                                 headers={**AUTH, "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def drain_prompt(ws, quiet=0.3):
    while True:
        try:
            await asyncio.wait_for(ws.recv(), quiet)
        except asyncio.TimeoutError:
            return


async def kiln_echo():
    t = spawn()
    async with websockets.connect(t["ws_url"], additional_headers=AUTH, max_size=None, compression=None) as ws:
        await drain_prompt(ws)
        # `cat` in canonical mode: the line discipline echoes each keystroke at once.
        await ws.send(b"cat\r")
        await drain_prompt(ws)
        lat = []
        for i in range(ROUNDS):
            ch = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await ws.send(ch)
            buf = b""
            while ch not in buf:
                m = await ws.recv()
                if isinstance(m, bytes):
                    buf += m
            lat.append((time.perf_counter() - t0) * 1000)
        await ws.send(b"\x03")
        return lat


def baseline_echo():
    pid, fd = pty.fork()
    if pid == 0:
        os.execv("/bin/cat", ["cat"])
    time.sleep(0.2)
    lat = []
    for i in range(ROUNDS):
        ch = bytes([97 + i % 26])
        t0 = time.perf_counter()
        os.write(fd, ch)
        buf = b""
        while ch not in buf:
            buf += os.read(fd, 4096)
        lat.append((time.perf_counter() - t0) * 1000)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    os.close(fd)
    return lat


async def many_terminals():
    before = rss_mib(SERVER_PID)
    ids = []
    for _ in range(TERMINALS):
        ids.append(spawn())
    # Attach to each once (replay + a command), then detach: the terminals stay open.
    for t in ids:
        async with websockets.connect(t["ws_url"], additional_headers=AUTH, compression=None) as ws:
            await ws.send(b"echo hi\r")
            await drain_prompt(ws, 0.05)
    await asyncio.sleep(1)
    return before, rss_mib(SERVER_PID)


async def main():
    print(f"echo rounds: {ROUNDS}; terminals: {TERMINALS}")
    k = await kiln_echo()
    b = baseline_echo()
    print(f"echo        kiln     p50 {pct(k, 50):.3f} ms  p99 {pct(k, 99):.3f} ms")
    print(f"echo        baseline p50 {pct(b, 50):.3f} ms  p99 {pct(b, 99):.3f} ms   p99 ratio {pct(k, 99) / max(pct(b, 99), 1e-6):.1f}")
    before, after = await many_terminals()
    print(f"terminals   {TERMINALS} open: server RSS {after:.1f} MiB (before {before:.1f} MiB)")
    print(f"goals       echo p99 < 2 ms: {'met' if pct(k, 99) < 2 else 'NOT met'}; "
          f"{TERMINALS} terminals < 300 MiB: {'met' if after < 300 else 'NOT met'}")


asyncio.run(main())
