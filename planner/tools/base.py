"""What a tool is, wherever it comes from (a built-in, a user's function, an MCP server).

A `Tool` has a name, a description, a JSON schema for its arguments and one
durability fact: whether calling it twice is safe (`idempotent`). The node loop
only ever sees this interface; validation, the call itself and turning the
result into text are each adapter's business. No Prefect here.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Mapping
from typing import Any

from planner.errors import PlanflowError, UserInputError

__all__ = [
    "Tool",
    "ToolArgumentError",
    "ToolCallError",
    "ToolSetupError",
    "Toolbox",
    "render_result",
]

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""OpenAI's rule for function names; MCP names are mapped onto it."""


class ToolCallError(PlanflowError, RuntimeError):
    """A tool call failed; its message goes back to the model as the observation."""


class ToolArgumentError(ToolCallError, ValueError):
    """The model's arguments do not fit the tool's schema; nothing was called."""


class ToolSetupError(UserInputError):
    """A tool source cannot be used (module not importable, MCP server dead, name clash): exit 2."""


def render_result(value: Any) -> str:
    """A tool's return value as the text the model reads: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class Tool(abc.ABC):
    """One callable tool. Subclasses set the attributes and implement `invoke`."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema (type object) of the arguments the model gives."""
    idempotent: bool
    """True if running a call again after a crash is safe (reads, pure functions)."""
    origin: str
    """Where it came from, for messages: "builtin", "module planner_demo", "mcp server 'files'"."""
    takes_idempotency_key: bool = False
    """If True, `invoke` receives a key stable for one call across resumes."""

    @abc.abstractmethod
    async def invoke(self, arguments: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        """Validate `arguments`, run the tool, return its result as text.

        Raises `ToolArgumentError` for arguments that do not fit (nothing ran) and
        `ToolCallError` for a failure the model should see; anything else is a bug.
        """

    @property
    def summary(self) -> str:
        """The description's first line: what the planner's catalogue shows."""
        first = self.description.strip().splitlines()[0] if self.description.strip() else ""
        return first or self.name

    def openai_tool(self) -> dict[str, Any]:
        """The tool in the OpenAI chat API's `tools` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    async def aclose(self) -> None:
        """Release what the tool holds (an MCP session); most hold nothing."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.origin}, {'idempotent' if self.idempotent else 'side effects'})>"


class Toolbox:
    """The tools a run offers, by name; two tools may not share a name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        existing = self._tools.get(tool.name)
        if existing is not None and existing is not tool:
            raise ToolSetupError(
                f"two tools are named {tool.name!r}: one from {existing.origin}, one from {tool.origin}; rename one"
            )
        self._tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def select(self, names: Iterable[str] | None) -> list[Tool]:
        """The named tools (unknown names ignored), or every tool when `names` is empty or None."""
        wanted = [n for n in (names or ()) if n in self._tools]
        return [self._tools[n] for n in wanted] if wanted else list(self._tools.values())

    def catalogue(self) -> list[tuple[str, str]]:
        """(name, one line) for each tool, for the planning prompt."""
        return [(t.name, t.summary) for t in self._tools.values()]

    async def aclose(self) -> None:
        for tool in self._tools.values():
            try:
                await tool.aclose()
            except Exception:  # closing is best effort: the run's outcome is already decided
                pass
