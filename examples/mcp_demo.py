"""A tiny MCP server for Planflow's worked example (README, "Tools"), over stdio.

    python flows/run.py "..." --mcp "python examples/mcp_demo.py"

Planflow starts it, lists its tools and offers them as `mcp_demo__<tool>`. Its
annotations say what is safe to repeat after a crash: `lookup_price` is
read-only (re-run freely); `place_order` is not (never re-run once started).
Written with the official `mcp` SDK v2, where FastMCP is called `MCPServer`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("mcp_demo")

PRICES = {"coffee beans 1kg": 24.50, "paper cups x100": 6.90, "oat milk 1l": 2.10}
ORDERS = Path("orders.jsonl")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def lookup_price(item: str) -> str:
    """The price in EUR of an item from the office supplies catalogue."""
    price = PRICES.get(item.strip().lower())
    if price is None:
        return f"no price for {item!r}; the catalogue has: {', '.join(PRICES)}"
    return f"{item}: {price:.2f} EUR"


@server.tool()
def place_order(item: str, quantity: int) -> str:
    """Order `quantity` of an item (a side effect: appends to orders.jsonl)."""
    with ORDERS.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"item": item, "quantity": quantity}) + "\n")
    return f"ordered {quantity} x {item}"


if __name__ == "__main__":
    server.run()
