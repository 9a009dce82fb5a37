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
from planner.tools.builtin import builtin_tools
from planner.tools.function import FunctionTool, tool
from planner.tools.loading import load_tools, load_tools_from

__all__ = [
    "FunctionTool",
    "Tool",
    "ToolArgumentError",
    "ToolCallError",
    "ToolSetupError",
    "Toolbox",
    "builtin_tools",
    "load_tools",
    "load_tools_from",
    "render_result",
    "tool",
]
