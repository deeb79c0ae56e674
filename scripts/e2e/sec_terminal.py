"""The sandbox probe run in a real terminal by an outside WebSocket client (python `websockets`).

Usage: sec_terminal.py BASE_URL API_KEY PROJECT_ID
Runs `sh probe.sh` in a fresh terminal, then job control (`sleep 100 &`, `jobs`, `kill %1`), and
prints everything the terminal wrote (the caller checks it), then `exit`.
"""
import asyncio, json, sys, urllib.request
import websockets
from wslib import read_until

BASE, KEY, PROJECT = sys.argv[1], sys.argv[2], sys.argv[3]
AUTH = {"Authorization": f"Bearer {KEY}"}


async def main():
    body = json.dumps({"project_id": PROJECT, "cols": 120, "rows": 40}).encode()
    req = urllib.request.Request(BASE + "/api/pty/spawn", data=body, method="POST",
                                 headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        t = json.loads(r.read())
    out = b""
    async with websockets.connect(t["ws_url"], additional_headers=AUTH, max_size=None) as ws:
        # $((…)) keeps the marker out of the echoed input.
        await ws.send(b"sh probe.sh pty; echo probe-finished-$((40+2))\r")
        out += (await read_until(ws, b"probe-finished-42", 20))[0]
        await ws.send(b"sleep 100 & jobs; kill %1; wait; echo jobs-done-$((40+2))\r")
        out += (await read_until(ws, b"jobs-done-42", 20))[0]
        await ws.send(b"exit\r")
        out += (await read_until(ws, b"\x00never", timeout=3))[0]
    sys.stdout.write(out.decode("utf-8", "replace"))


asyncio.run(main())
