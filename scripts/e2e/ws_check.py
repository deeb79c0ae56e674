"""WebSocket checks with an outside client (python `websockets`) against kiln-bench's /ws/echo.

Text, binary, fragmented and 16 MiB messages, ping/pong, and both close directions.
Usage: python ws_check.py ws://127.0.0.1:PORT/ws/echo
"""
import asyncio
import os
import sys

import websockets

URL = sys.argv[1]
results = []


def check(name, ok, detail=""):
    results.append((name, ok))
    print(("ok   " if ok else "FAIL ") + name + (f" ({detail})" if detail and not ok else ""))


async def main():
    async with websockets.connect(URL, max_size=None, compression=None) as ws:
        await ws.send("hello, kiln ✓")
        check("text echo", await ws.recv() == "hello, kiln ✓")

        blob = os.urandom(70_000)
        await ws.send(blob)
        check("binary echo", await ws.recv() == blob)

        await ws.send(["frag", "mented ", "message ✓"])  # sent as three frames
        check("fragmented text reassembled", await ws.recv() == "fragmented message ✓")

        await ws.send([b"\x00\x01", b"\x02\x03"])
        check("fragmented binary reassembled", await ws.recv() == b"\x00\x01\x02\x03")

        big = os.urandom(16 * 1024 * 1024)
        await ws.send(big)
        echoed = await ws.recv()
        check("16 MiB binary message", echoed == big, f"got {len(echoed)} bytes")

        big_text = "k" * (16 * 1024 * 1024)
        await ws.send(big_text)
        check("16 MiB text message", await ws.recv() == big_text)

        latency = await (await ws.ping(b"are you there"))
        check("ping answered with pong", latency >= 0)

        await ws.close(code=1000, reason="client done")
        check("client-initiated close completes", ws.close_code == 1000, f"close code {ws.close_code}")

    # Server-initiated closes: frames written raw to the socket, as a misbehaving client would.
    async def expect_close(name, raw, want):
        async with websockets.connect(URL, compression=None) as ws:
            ws.transport.write(raw)
            try:
                await asyncio.wait_for(ws.recv(), timeout=5)
                check(name, False, "no close")
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                check(name, code == want, f"close code {code}")
            except asyncio.TimeoutError:
                check(name, False, "timed out waiting for the close")

    await expect_close("unmasked frame: server closes with 1002", b"\x81\x01A", 1002)
    key = b"\x01\x02\x03\x04"
    bad = bytes(b ^ key[i % 4] for i, b in enumerate(b"\xff\xfe"))
    await expect_close("invalid UTF-8: server closes with 1007", b"\x81\x82" + key + bad, 1007)
    await expect_close("oversized frame: server closes with 1009", b"\x82\xff" + (2**40).to_bytes(8, "big") + key, 1009)


asyncio.run(main())
passed = sum(1 for _, ok in results if ok)
failed = len(results) - passed
print(f"ws_check: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
