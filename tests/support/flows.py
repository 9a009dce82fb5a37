"""Helpers for tests that run the real plan-and-execute flow in-process."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from .fake_openai import text

_TASK_ID = re.compile(r"## Your task \(id: (.+?)\)")


def route(body: dict) -> str:
    """Which kind of request this is: 'plan', 'node:<id>', 'replan' or 'synthesis'."""
    fmt = body.get("response_format") or {}
    if fmt:
        return str(fmt.get("json_schema", {}).get("name", "plan"))
    match = _TASK_ID.search(_prompt(body["messages"]))
    return f"node:{match.group(1)}" if match else "synthesis"


def _prompt(messages: list[dict]) -> str:
    """The prompt a request answers: its last message, or, inside a node's tool loop (the
    conversation ends with tool results or an assistant turn), the last message before that loop."""
    for message in reversed(messages):
        if message.get("role") not in ("tool", "assistant"):
            content = message.get("content")
            return content if isinstance(content, str) else text(content)
    return ""


def echo_node(body: dict) -> str:
    """Default answer: a node's result names the node, so tests can trace context."""
    return f"result of {route(body)}"


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


def artifacts_by_key(run_key: str, *kinds: str) -> dict[str, list]:
    """Every published version of the run's artifacts of these kinds, oldest first, read back from Prefect."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.artifacts import artifact_key

    keys = {kind: artifact_key(kind, run_key) for kind in kinds}

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys.values()))),
                sort=ArtifactSort.CREATED_DESC,
            )

    found = sorted(asyncio.run(read()), key=lambda a: a.created)
    return {kind: [a for a in found if a.key == key] for kind, key in keys.items()}

