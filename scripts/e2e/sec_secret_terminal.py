"""A terminal given a secret, driven by python `websockets`: echoes it, then reattaches for the replay.

Usage: sec_secret_terminal.py BASE_URL API_KEY PROJECT_ID SECRET_NAME
Prints what the terminal showed live, a line `--- replay ---`, and what a reattaching viewer got.
"""
import asyncio, json, sys, urllib.request
import websockets
from wslib import read_until

BASE, KEY, PROJECT, NAME = sys.argv[1:5]
AUTH = {"Authorization": f"Bearer {KEY}"}


async def main():
    body = json.dumps({"project_id": PROJECT, "cols": 120, "rows": 30, "secrets": [NAME]}).encode()
    req = urllib.request.Request(BASE + "/api/pty/spawn", data=body, method="POST", headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        t = json.loads(r.read())
    async with websockets.connect(t["ws_url"], additional_headers=AUTH, max_size=None) as ws:
        await ws.send(f'echo "[${NAME}]"; printf %s "${NAME}" | base64; echo end-$((6*7))\r'.encode())
        live, _ = await read_until(ws, b"end-42\r\n", 15)
    async with websockets.connect(t["ws_url"], additional_headers=AUTH, max_size=None) as ws:
        replay, _ = await read_until(ws, b"end-42\r\n", timeout=30)
    sys.stdout.write(live.decode("utf-8", "replace") + "\n--- replay ---\n" + replay.decode("utf-8", "replace"))


asyncio.run(main())
