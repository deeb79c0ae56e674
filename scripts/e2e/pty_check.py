"""Terminal checks with an outside WebSocket client (python `websockets`) against `kiln serve`.

Usage: pty_check.py BASE_URL API_KEY PROJECT_ID
Prints one `ok`/`FAIL` line per check and a summary `pty e2e: N passed, M failed`.
"""
import asyncio, json, sys, time, urllib.request
import websockets
from wslib import read_until

BASE, KEY, PROJECT = sys.argv[1], sys.argv[2], sys.argv[3]
AUTH = {"Authorization": f"Bearer {KEY}"}
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={**AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def main():
    status, t = api("POST", "/api/pty/spawn", {"project_id": PROJECT, "cols": 80, "rows": 24})
    check("spawn a terminal (201, id and ws_url)", status == 201 and t["id"].startswith("pty_") and t["ws_url"].startswith("ws://"), t)
    url = t["ws_url"]

    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        await ws.send(b"echo ready-$((40+2))\r")
        out, _ = await read_until(ws, b"ready-42")
        check("the shell runs commands", b"ready-42" in out, out[-200:])

        await ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
        await ws.send(b"stty size\r")
        out, _ = await read_until(ws, b"43 132")
        check("stty size sees the resize (43 132)", b"43 132" in out, out[-200:])

        await ws.send(b"printf '\\316\\273 \\342\\202\\254 \\360\\237\\230\\200 %s\\n' done-utf8\r")
        want = "λ € 😀 done-utf8".encode()
        out, _ = await read_until(ws, want)
        check("multi-byte UTF-8 comes back byte-exact", want in out, out[-200:])

        await ws.send(b"echo before-detach-marker\r")
        await read_until(ws, b"before-detach-marker\r\n")

    status, lst = api("GET", "/api/pty")
    check("the terminal survives a dropped connection (listed, running)",
          status == 200 and any(x["id"] == t["id"] and x["status"] == "running" for x in lst["items"]), lst)

    async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws:
        replay, _ = await read_until(ws, b"before-detach-marker", timeout=30)
        check("reattaching replays earlier output", b"before-detach-marker" in replay and b"ready-42" in replay, replay[-200:])
        # A second viewer at the same time sees the same live output.
        async with websockets.connect(url, additional_headers=AUTH, max_size=None) as ws2:
            await read_until(ws2, b"before-detach-marker", timeout=30)
            await ws.send(b"echo two-viewers-$((6*7))\r")
            a, _ = await read_until(ws, b"two-viewers-42")
            b, _ = await read_until(ws2, b"two-viewers-42")
            check("two viewers both see live output", b"two-viewers-42" in a and b"two-viewers-42" in b)
            await ws.send(b"exit 3\r")
            _, controls = await read_until(ws, b"\x00never", timeout=5)
            check("exit 3 sends {type: exit, code: 3}", {"type": "exit", "code": 3} in controls, controls)
            _, controls2 = await read_until(ws2, b"\x00never", timeout=5)
            check("the other viewer gets the exit too", {"type": "exit", "code": 3} in controls2, controls2)

    # Refusals: bad size, someone else's origin, an unknown terminal.
    status, err = api("POST", "/api/pty/spawn", {"project_id": PROJECT, "cols": 0, "rows": 24})
    check("cols 0 is refused (400 validation_failed)", status == 400 and err["error"]["code"] == "validation_failed", err)
    status, _ = api("DELETE", "/api/pty/pty_0000000000000000000000")
    check("an unknown terminal is 404", status == 404)
    try:
        async with websockets.connect(BASE.replace("http", "ws") + "/api/pty/pty_0000000000000000000000/stream", additional_headers=AUTH):
            check("attaching to an unknown terminal is refused", False)
    except websockets.InvalidStatus as e:
        check("attaching to an unknown terminal is refused (404)", e.response.status_code == 404)
    status, t2 = api("POST", "/api/pty/spawn", {"project_id": PROJECT, "cols": 80, "rows": 24})
    status, _ = api("DELETE", f"/api/pty/{t2['id']}")
    check("DELETE ends a terminal", status == 200)

    print(f"pty e2e: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


asyncio.run(main())
