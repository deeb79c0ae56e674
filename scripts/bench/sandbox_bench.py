"""Time to first output with and without the sandbox, alternating between two `kiln serve`s.

Usage: sandbox_bench.py N OFF_BASE OFF_KEY OFF_PROJECT ON_BASE ON_KEY ON_PROJECT
For each of N rounds and each server: POST /api/shell/run `echo hi` on a raw socket, timed from the
request's first byte to the `stdout` event's bytes; then POST /api/pty/spawn + WebSocket attach,
timed from the spawn request to the first terminal byte (the prompt). Also times the bare cost on
this machine: `sh -c 'echo hi'` and the same inside a plain `bwrap` (no Kiln). Prints medians.
"""
import asyncio, json, shutil, socket, statistics, subprocess, sys, time, urllib.request
import websockets

N = int(sys.argv[1])
SERVERS = {"off": sys.argv[2:5], "bwrap": sys.argv[5:8]}


def shell_first_byte(base, key, project):
    host, port = base.split("//")[1].split(":")
    body = json.dumps({"project_id": project, "command": "echo hi"}).encode()
    req = (f"POST /api/shell/run HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(req)
    buf = b""
    while b"event: stdout" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("stream ended before stdout: " + buf.decode(errors="replace")[-500:])
        buf += chunk
    t = time.perf_counter() - t0
    while s.recv(65536):  # let the job finish before the next round
        pass
    s.close()
    return t


async def prompt_first_byte(base, key, project):
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    t0 = time.perf_counter()
    req = urllib.request.Request(base + "/api/pty/spawn", method="POST", headers=auth,
                                 data=json.dumps({"project_id": project, "cols": 80, "rows": 24}).encode())
    with urllib.request.urlopen(req) as r:
        t = json.loads(r.read())
    async with websockets.connect(t["ws_url"], additional_headers=auth) as ws:
        while not isinstance(await ws.recv(), bytes):
            pass
        elapsed = time.perf_counter() - t0
    d = urllib.request.Request(base + f"/api/pty/{t['id']}", method="DELETE", headers=auth)
    urllib.request.urlopen(d).read()
    return elapsed


def bare(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main():
    times = {(k, m): [] for k in SERVERS for m in ("shell", "pty")}
    bwrap = shutil.which("bwrap")
    base_argv = {"sh": ["sh", "-c", "echo hi"]}
    if bwrap:
        base_argv["bwrap"] = [bwrap, "--unshare-all", "--share-net", "--die-with-parent", "--new-session",
                              "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                              "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                              "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "sh", "-c", "echo hi"]
    btimes = {k: [] for k in base_argv}
    for name, srv in SERVERS.items():  # warm-up
        shell_first_byte(*srv); asyncio.run(prompt_first_byte(*srv))
    for _ in range(N):
        for name, srv in SERVERS.items():
            times[(name, "shell")].append(shell_first_byte(*srv))
            times[(name, "pty")].append(asyncio.run(prompt_first_byte(*srv)))
        for k, argv in base_argv.items():
            btimes[k].append(bare(argv))
    ms = lambda xs: statistics.median(xs) * 1000
    p90 = lambda xs: sorted(xs)[int(len(xs) * 0.9) - 1] * 1000
    for m, label in (("shell", "POST /api/shell/run `echo hi` → first stdout byte"), ("pty", "terminal spawn + attach → first prompt byte")):
        off, on = times[("off", m)], times[("bwrap", m)]
        print(f"{label}: --sandbox off p50 {ms(off):.1f} ms (p90 {p90(off):.1f}), --sandbox bwrap p50 {ms(on):.1f} ms "
              f"(p90 {p90(on):.1f}); added {ms(on) - ms(off):.1f} ms at p50 (goal < 15: {'met' if ms(on) - ms(off) < 15 else 'NOT met'})")
    if "bwrap" in btimes:
        print(f"baseline, no Kiln: sh -c 'echo hi' p50 {ms(btimes['sh']):.1f} ms, inside bare bwrap p50 {ms(btimes['bwrap']):.1f} ms "
              f"(this machine's namespace cost {ms(btimes['bwrap']) - ms(btimes['sh']):.1f} ms)")
    print(f"({N} rounds, alternating)")


main()
