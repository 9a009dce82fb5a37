"""Plan models: what a planner returns and what the executor runs.

The field descriptions are part of the product: they become the JSON schema the
planner model is asked to follow. Models are frozen so that plans hash stably
and cache keys built from them never drift.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from planner.graph import DependencyGraph

__all__ = [
    "NodeOutcome",
    "Plan",
    "Repair",
    "Task",
    "exact_tuples_plan_schema",
    "positional_plan_schema",
    "strict_json_schema",
]


class Task(BaseModel):
    """One step of a plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Short unique id of this task, e.g. 't1'.")
    description: str = Field(
        description="What to do in this step, self-contained and specific to the goal."
    )
    depends_on: tuple[str, ...] = Field(
        default=(),
        description="Ids of the tasks whose results this task needs. Empty if none.",
    )
    tools: tuple[str, ...] = Field(
        default=(),
        description="Names of the tools this task needs, from the tool list. Empty: it may use any.",
    )

    @model_serializer(mode="wrap")
    def _without_empty_tools(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A task that names no tools serialises as it did before tools existed, so stored
        # plans, their JSON and every key derived from them stay the same.
        data = handler(self)
        if not data.get("tools"):
            data.pop("tools", None)
        return data


class Plan(BaseModel):
    """A validated task DAG: unique ids, known dependencies, no self-loops, no cycles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: tuple[Task, ...] = Field(
        description="The tasks, each depending only on tasks listed in this plan."
    )

    @model_validator(mode="after")
    def _is_a_dag(self) -> Plan:
        ids = [t.id for t in self.tasks]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate task ids in {ids}")
        DependencyGraph({t.id: t.depends_on for t in self.tasks})
        return self

    @cached_property
    def graph(self) -> DependencyGraph:
        return DependencyGraph({t.id: t.depends_on for t in self.tasks})

    @cached_property
    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Repair(BaseModel):
    """One change the compiler made to a model-made plan, kept in the run's repair log."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="Machine-readable kind, e.g. 'dropped_unknown_dependency'.")
    task_id: str | None = Field(default=None, description="The task it concerns, if any.")
    detail: str = Field(description="What was changed, for people.")


class NodeOutcome(BaseModel):
    """The persisted result of one executed plan node."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = Field(
        default=False, description="True if the model's output was cut to the stored-size cap."
    )


def strict_json_schema(model: type[BaseModel], *, omit: Collection[str] = ()) -> dict[str, Any]:
    """The model's JSON schema in the form OpenAI's strict structured output accepts.

    Strict mode wants every property required, `additionalProperties: false` on
    every object and no defaults; `$ref`s are inlined because some
    OpenAI-compatible servers (llama.cpp grammars among them) handle them poorly.
    Properties named in `omit` (optional ones, such as a task's `tools` when the
    run has none) are left out wherever they appear, so the model need not fill them.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return fix(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("default", "title"):
                continue
            if key == "properties":
                out[key] = {name: fix(sub) for name, sub in value.items() if name not in omit}
            else:
                out[key] = fix(value)
        if out.get("type") == "object":
            out["additionalProperties"] = False
            out["required"] = list(out.get("properties", {}))
        return out

    return fix(schema)


def positional_plan_schema(max_tasks: int, *, description_chars: int = 200) -> dict[str, Any]:
    """A plan schema that only admits DAGs of 1..`max_tasks` tasks: task i is `t<i>` and may
    depend only on t1..t<i-1>.

    For small local models (the embedded SmolLM2), whose free-form plans often
    hold cycles and invented ids: the grammar makes those unwritable.

    Why `anyOf` one tuple per length, not one `prefixItems` list with `minItems`:
    llama.cpp's chat endpoint compiles the schema to a GBNF grammar, and its
    converter turns a `prefixItems` list into a fixed tuple, ignoring
    `minItems`/`maxItems`, so the model could never close the array before
    `max_tasks` (every plan had exactly 7 tasks). One alternative per length lets
    it stop after any task; each task's schema is a shared `$defs` entry, so the
    grammar grows by one rule reference per position, not by copies. (An
    `"items": false` would be the JSON Schema way to close a tuple, but the chat
    endpoint refuses it: "schema must be an object".) OpenAI's
    strict mode rejects `prefixItems`: hosted models get `strict_json_schema(Plan)`.
    """
    if max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")

    def task_schema(position: int) -> dict[str, Any]:
        earlier = [f"t{j}" for j in range(1, position)]
        deps: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "maxItems": 0}
        if earlier:
            deps = {"type": "array", "items": {"type": "string", "enum": earlier}, "maxItems": min(len(earlier), 4)}
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "description", "depends_on"],
            "properties": {
                "id": {"type": "string", "const": f"t{position}"},
                "description": {"type": "string", "minLength": 1, "maxLength": description_chars},
                "depends_on": deps,
            },
        }

    return exact_tuples_plan_schema(task_schema, max_tasks)


def exact_tuples_plan_schema(task_schema: Callable[[int], dict[str, Any]], max_tasks: int) -> dict[str, Any]:
    """`{"tasks": [...]}` of 1..`max_tasks` tasks, task i shaped by `task_schema(i)`: one
    exact tuple per length over shared `$defs` (why: `positional_plan_schema`)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["tasks"],
        "$defs": {f"t{i}": task_schema(i) for i in range(1, max_tasks + 1)},
        "properties": {
            "tasks": {
                "anyOf": [
                    {
                        "type": "array",
                        "prefixItems": [{"$ref": f"#/$defs/t{j}"} for j in range(1, n + 1)],
                        # Ignored by the GBNF converter (a tuple is exact there); for JSON
                        # Schema validators, which would admit extra items without them.
                        "minItems": n,
                        "maxItems": n,
                    }
                    for n in range(1, max_tasks + 1)
                ]
            }
        },
    }
