"""Assemble the tools a run offers from its settings: built-ins, user modules, MCP servers.

One place decides what a node may call, so the CLI, deployments and tests get
the same toolbox from the same settings. MCP servers are started here and
closed with the toolbox.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from planner.settings import PlanflowSettings
from planner.tools.base import Toolbox
from planner.tools.builtin import builtin_tools
from planner.tools.loading import load_tools_from

__all__ = ["RunToolbox", "open_toolbox"]


class RunToolbox(Toolbox):
    """A toolbox that also owns what its tools need open (MCP server processes)."""

    def __init__(self) -> None:
        super().__init__()
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def close_with(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def aclose(self) -> None:
        await super().aclose()
        for closer in self._closers:
            await closer()


def _server_environment() -> dict[str, str]:
    """What an MCP server inherits: the user's environment, less the model's credentials."""
    hidden = ("OPENAI_", "PLANFLOW_", "PREFECT_API_KEY")
    return {k: v for k, v in os.environ.items() if not k.startswith(hidden)}


async def open_toolbox(settings: PlanflowSettings, run_key: str) -> RunToolbox:
    """The run's tools; raises `ToolSetupError` (exit 2) for a module or server that cannot be used."""
    toolbox = RunToolbox()
    if settings.builtin_tools:
        for tool in builtin_tools(
            settings.workspace_for(run_key), http_allow=settings.http_allow, http_timeout=settings.tool_timeout
        ):
            toolbox.add(tool)
    for tool in load_tools_from(settings.tools):
        toolbox.add(tool)
    if settings.mcp:
        from planner.tools.mcp import open_mcp_servers  # the SDK is only imported when asked for

        connections = await open_mcp_servers(settings.mcp, env=_server_environment())
        toolbox.close_with(connections.aclose)
        try:
            for tool in connections.tools:
                toolbox.add(tool)
        except Exception:
            await toolbox.aclose()
            raise
    return toolbox
