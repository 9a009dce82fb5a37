"""Tools a node's model can call: the contract (`base`), user functions (`@tool`),
built-ins and MCP servers. Import `tool` from here to write your own."""

from planner.tools.base import (
    Tool,
    ToolArgumentError,
    ToolCallError,
    Toolbox,
    ToolSetupError,
    render_result,
)

__all__ = [
    "Tool",
    "ToolArgumentError",
    "ToolCallError",
    "ToolSetupError",
    "Toolbox",
    "render_result",
]
