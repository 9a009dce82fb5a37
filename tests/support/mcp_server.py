"""A small MCP server for the tests, speaking stdio (default) or streamable HTTP.

    python tests/support/mcp_server.py               # stdio
    python tests/support/mcp_server.py --http PORT   # http://127.0.0.1:PORT/mcp

Its tools cover what a client must handle: a read-only tool (`add`), one with a
side effect the test can count (`record`, a line per call in `$MCP_RECORD_FILE`),
a slow one (`sleep`), one that kills the server mid-call (`die`) and one that
answers with an error result (`fail`). Written with the `mcp` v2 SDK, where
FastMCP is called `MCPServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("planflow-test")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def record(text: str) -> str:
    """Append `text` as a line to the file named by MCP_RECORD_FILE (a side effect tests count)."""
    with open(os.environ["MCP_RECORD_FILE"], "a", encoding="utf-8") as file:
        file.write(text + "\n")
    return f"recorded {text}"


@server.tool(annotations=ToolAnnotations(idempotent_hint=True))
async def sleep(seconds: float) -> str:
    """Wait `seconds`, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def die() -> str:
    """Kill the server in the middle of the call."""
    os._exit(3)


@server.tool()
def fail() -> str:
    """Answer with an error result."""
    raise ToolError("the fail tool always fails")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    args = parser.parse_args()
    if args.http is not None:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
