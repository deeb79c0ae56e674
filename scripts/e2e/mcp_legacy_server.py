"""An MCP server of the previous generation (the Python SDK 1.x's FastMCP: initialize handshake,
Mcp-Session-Id, no server/discover), so Kiln's client is seen to fall back to 2025-11-25.

Usage: mcp_legacy_server.py PORT   (streamable HTTP on 127.0.0.1:PORT/mcp)
"""
import sys

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("legacy", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")


@mcp.tool()
def shout(text: str) -> str:
    """Answer in capitals."""
    return text.upper()


mcp.run("streamable-http")
