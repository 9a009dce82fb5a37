"""Helpers for tests that run the real plan-and-execute flow in-process."""

from __future__ import annotations

import asyncio
import json
from typing import Any


def plan_json(*tasks: tuple[str, list[str]]) -> str:
    """A plan answer: ("a", []), ("b", ["a"]) -> {"tasks": [...]}, descriptions "do <id>"."""
    return json.dumps(
        {"tasks": [{"id": i, "description": f"do {i}", "depends_on": deps} for i, deps in tasks]}
    )


def run_flow(goal: str, **params: Any) -> tuple[Any, Any]:
    """Run the real flow in-process; return (final state, result or exception)."""
    from flows.plan_and_execute import plan_and_execute

    state = asyncio.run(plan_and_execute(goal=goal, return_state=True, **params))
    return state, state.result(raise_on_failure=False)
