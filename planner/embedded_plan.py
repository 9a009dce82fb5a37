"""The plan form the embedded model writes: each task says in one word what it needs.

A 135M model cannot track ids: asked for `depends_on` lists (even under a grammar
that only admits earlier ids) it left most plans without any edge. Asked instead
for one word per task after its description, `"after": "start" | "previous" |
"all"` (nothing; the task just before it; every earlier task), it writes chains,
independent steps and joins the way its examples show them. `plan_from_relative`
turns that answer into the ordinary plan JSON before the compiler sees it, so
everything downstream is unchanged. Other models keep the `depends_on` form.

The grammar (`relative_plan_schema`) keeps what the positional schema fixed:
one exact tuple per plan length (see `planner.models.positional_plan_schema`),
so the model may stop after any task. Pure: no model, no Prefect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from planner.models import exact_tuples_plan_schema

__all__ = [
    "AFTER",
    "DESCRIPTION_PATTERN",
    "EMBEDDED_PLAN_SAMPLING",
    "plan_from_relative",
    "relative_example",
    "relative_plan_schema",
]

AFTER = ("start", "previous", "all")
"""What a task needs: nothing, the task just before it, every earlier task."""

EMBEDDED_PLAN_SAMPLING: dict[str, Any] = {"repeat_penalty": 1.15, "repeat_last_n": 128}
"""llama.cpp sampling for the embedded planner. Its default sampling copies the goal
or the previous step into every task; a mild repeat penalty over the last 128 tokens
(the goal and the steps written so far) makes the steps differ. 1.3 made it write
markup and placeholders instead; greedy decoding (temperature 0) repeated the goal in
19 of 20 plans. The grammar fixes the JSON tokens, so the penalty acts on the free text."""

DESCRIPTION_PATTERN = r'^[^<>{}"\\\n\r\t]{1,%d}$'
"""A task description under the grammar: no markup characters (`<tag>`, `{placeholder}`),
which the model otherwise copies from web text into a step, and no raw control characters
(the pattern replaces the JSON string rule, which kept those out)."""


def relative_plan_schema(max_tasks: int, *, description_chars: int = 200) -> dict[str, Any]:
    """Plans of 1..`max_tasks` tasks; task 1 has a description only, task i > 1 also an `after`.

    Task 2 may say "start" or "previous" ("all" would be the same as "previous").
    """
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")

    def task_schema(position: int) -> dict[str, Any]:
        # A pattern, not minLength/maxLength: llama.cpp's grammar converter reads only the pattern then.
        properties: dict[str, Any] = {"description": {"type": "string", "pattern": DESCRIPTION_PATTERN % description_chars}}
        if position > 1:  # after the description: the model decides what the step needs once it has named it
            words = list(AFTER) if position > 2 else list(AFTER[:2])
            properties["after"] = {"type": "string", "enum": words}
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(properties),
            "properties": properties,
        }

    return exact_tuples_plan_schema(task_schema, max_tasks)


def _after_word(position: int, depends_on: Sequence[str]) -> str:
    deps = set(depends_on)
    if not deps:
        return "start"
    if deps == {f"t{position - 1}"}:
        return "previous"
    if deps == {f"t{j}" for j in range(1, position)}:
        return "all"
    raise ValueError(f"task t{position}'s dependencies {sorted(deps)} have no word in the relative form")


def relative_example(tasks: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A positional example plan ((description, depends_on), ...) as the embedded model must write it."""
    items: list[dict[str, str]] = []
    for position, (description, depends_on) in enumerate(tasks, 1):
        item = {"description": description}
        if position > 1:
            item["after"] = _after_word(position, depends_on)
        elif depends_on:
            raise ValueError("the first task cannot depend on anything")
        items.append(item)
    return json.dumps({"tasks": items})


def plan_from_relative(text: str) -> str:
    """The ordinary plan JSON (ids t1.., `depends_on` lists) of a relative-form answer.

    Text that is not a relative-form plan is returned unchanged, for the compiler to
    judge (and name its defect).
    """
    try:
        data = json.loads(text, strict=False)  # the description pattern lets a raw newline through
        tasks = data["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and "description" in t for t in tasks):
            return text
    except (ValueError, TypeError, KeyError, RecursionError):
        return text
    plan = []
    for position, task in enumerate(tasks, 1):
        word = task.get("after", "start") if position > 1 else "start"
        earlier = [f"t{j}" for j in range(1, position)]
        depends_on = {"previous": earlier[-1:], "all": earlier}.get(word, [])
        plan.append({"id": f"t{position}", "description": task["description"], "depends_on": depends_on})
    return json.dumps({"tasks": plan})
