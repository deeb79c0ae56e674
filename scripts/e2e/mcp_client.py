"""The official MCP Python SDK (mcp 2.x) as a client of Kiln's /mcp, once per protocol era.

Usage: mcp_client.py BASE_URL KEY PROJECT_ID PROJECT_DIR MODE [NARROW_KEY]
  MODE auto   : the SDK's default (probes server/discover, speaks 2026-07-28)
  MODE legacy : pinned to the initialize handshake (2025-11-25, Mcp-Session-Id)
Prints one "ok"/"FAIL" line per check and a summary line "mcp-client MODE: P passed, F failed".
"""
import asyncio, os, sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

BASE, KEY, PRJ, DIR, MODE = sys.argv[1:6]
NARROW = sys.argv[6] if len(sys.argv) > 6 else None
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   [{MODE}] {name}")
    else:
        failed += 1
        print(f"FAIL [{MODE}] {name} {detail}")


def client(key):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    return Client(streamable_http_client(BASE + "/mcp", http_client=http), mode=MODE)


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def main():
    async with client(KEY) as c:
        want = "2026-07-28" if MODE == "auto" else "2025-11-25"
        check(f"the connection speaks {want}", c.protocol_version == want, c.protocol_version)
        tools = await c.list_tools()
        names = {t.name for t in tools.tools}
        check("tools/list names Kiln's tools", {"search", "read_file", "edit_file", "run_command", "list_projects"} <= names, names)
        check("every tool has an input and an output schema", all(t.input_schema and t.output_schema for t in tools.tools))
        projects = await c.call_tool("list_projects", {})
        ids = [p["id"] for p in (projects.structured_content or {}).get("projects", [])]
        check("list_projects shows the project", PRJ in ids, ids)
        found = await c.call_tool("search", {"query": "def answer", "project_id": PRJ})
        check("search finds the function", not found.is_error and "calc.py:1" in text(found), text(found))
        read = await c.call_tool("read_file", {"path": "calc.py", "project_id": PRJ})
        check("read_file returns the file", not read.is_error and "return 41" in text(read), text(read))
        check("… with structured content", (read.structured_content or {}).get("output", "").startswith("1\tdef answer"))
        edit = await c.call_tool("edit_file", {"path": "calc.py", "old_string": "41", "new_string": "42", "project_id": PRJ})
        on_disk = open(os.path.join(DIR, "calc.py")).read()
        check("edit_file changes the file on disk", not edit.is_error and "return 42" in on_disk, text(edit))
        # Put it back for the other era's run.
        await c.call_tool("edit_file", {"path": "calc.py", "old_string": "42", "new_string": "41", "project_id": PRJ})
        outside = await c.call_tool("read_file", {"path": "../../../etc/passwd", "project_id": PRJ})
        check("a path outside the project is an error result (isError)", outside.is_error and "root:" not in text(outside), text(outside))
        resources = await c.list_resources()
        uris = [str(r.uri) for r in resources.resources]
        check("resources/list shows the project's files", any(u.endswith("/calc.py") for u in uris), uris[:5])
        calc = next((u for u in uris if u.endswith("/calc.py")), None)
        if calc:
            content = await c.read_resource(calc)
            check("resources/read returns the file", "def answer" in getattr(content.contents[0], "text", ""))
    if NARROW:
        async with client(NARROW) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            check("a key without shell:run does not see run_command", "run_command" not in names and "read_file" in names, names)
    print(f"mcp-client {MODE}: {passed} passed, {failed} failed")


asyncio.run(main())
sys.exit(1 if failed else 0)
