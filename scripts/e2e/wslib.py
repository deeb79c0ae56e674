"""Shared by the e2e WebSocket clients (python `websockets`)."""
import asyncio, json, time
import websockets


async def read_until(ws, needle: bytes, timeout=10.0):
    """Terminal bytes until `needle` appears or `timeout` passes; text frames (JSON control) are collected."""
    buf, controls = b"", []
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = await asyncio.wait_for(ws.recv(), left)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            break
        if isinstance(m, bytes):
            buf += m
        else:
            controls.append(json.loads(m))
    return buf, controls
