"""A small MCP server built on the official Python SDK's MCPServer, for Kiln's registry tests.

Usage: mcp_test_server.py http PORT [TOKEN]   streamable HTTP on 127.0.0.1:PORT/mcp (TOKEN: a bearer
                                               token every request must carry)
       mcp_test_server.py stdio                 over stdin/stdout
Tools: echo, add (structured output), slow (sleeps), big (a large result), peek (tries to read a
file: what the sandbox lets it see), crash (the process exits mid-call). tools/list pages two at a time.
"""
import os, sys, time

from mcp.server.mcpserver import MCPServer
from mcp.types import ListToolsResult


class Paged(MCPServer):
    async def _handle_list_tools(self, ctx, params):
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        nxt = str(start + 2) if start + 2 < len(tools) else None
        return ListToolsResult(tools=tools[start:start + 2], next_cursor=nxt)


mcp = Paged("kiln-test")


@mcp.tool()
def echo(text: str) -> str:
    """Answer with the text given."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@mcp.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@mcp.tool()
def big(kib: int) -> str:
    """A result of kib KiB."""
    return "x" * (kib * 1024)


@mcp.tool()
def peek(path: str) -> str:
    """Try to read a file."""
    try:
        with open(path, "rb") as f:
            return "read %d bytes" % len(f.read(4096))
    except Exception as e:
        return "cannot read: %s" % type(e).__name__


@mcp.tool()
def crash() -> str:
    """Exit in the middle of the call."""
    os._exit(3)


if sys.argv[1] == "stdio":
    mcp.run("stdio")
else:
    import uvicorn

    port, token = int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else None)
    app = mcp.streamable_http_app(json_response=False)

    async def guarded(scope, receive, send):
        if token and scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if auth != "Bearer " + token:
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"no"})
                return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")
