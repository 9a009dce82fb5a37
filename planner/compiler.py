"""The plan compiler: whatever a model (or a person) wrote, a valid `Plan` or a clear error.

Two modes:

* lenient (model-made plans): find the JSON in prose or code fences, coerce ids
  to strings, merge or rename duplicate ids, drop self-loops, duplicate edges
  and dependencies on unknown ids, and record each change as a `Repair`. A task
  limit guards against over-decomposition. Cycles cannot be repaired safely, so
  they are rejected, naming the cycle.
* strict (a plan a person gave): no repair at all; the first defect raises a
  typed `PlanError` naming it. The limit is only a sanity bound.

A task may name the tools it needs (`tools`). Given the run's tool names
(`known_tools`), a name that is not one of them is dropped and logged as a
repair (`dropped_unknown_tool`; in strict mode it is an error): the node is then
offered the tools that do exist, or all of them. Without `known_tools` names are kept as
they are (the flow offers a node only the named tools that exist).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from planner.errors import (
    CycleError,
    DuplicateTaskIdError,
    EmptyPlanError,
    PlanParseError,
    PlanTooLargeError,
    SelfLoopError,
    UnknownDependencyError,
)
from planner.graph import find_cycle
from planner.models import Plan, Repair, Task

__all__ = ["STRICT_MAX_TASKS", "CompiledPlan", "compile_plan", "extract_json"]

STRICT_MAX_TASKS = 1000
"""Sanity bound for plans given by a person; model-made plans use `max_tasks`."""

_TASK_LIST_KEYS = ("tasks", "plan", "steps", "subtasks")
_DESCRIPTION_KEYS = ("description", "task", "name", "step", "title", "action", "text")
_DEPENDS_KEYS = ("depends_on", "dependencies", "deps", "depends", "requires", "after")
_STRICT_TASK_KEYS = {"id", "description", "depends_on", "tools"}
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_MAX_JSON_STARTS = 64  # candidates tried when JSON hides inside prose


@dataclass(frozen=True)
class CompiledPlan:
    """A valid plan and the repairs it took to get there (empty for a clean plan)."""

    plan: Plan
    repairs: tuple[Repair, ...] = ()


def _loads(text: str) -> Any:
    """`json.loads` whose every failure (bad syntax, huge ints, deep nesting) is a PlanParseError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanParseError(f"the plan is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise PlanParseError(f"the plan is not usable JSON: {type(exc).__name__}: {str(exc)[:100]}") from None


def _looks_like_plan(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(isinstance(value.get(k), list) for k in _TASK_LIST_KEYS)
    return isinstance(value, list) and bool(value) and all(isinstance(v, (Mapping, str)) for v in value)


def extract_json(text: str) -> Any:
    """Parse the JSON plan in `text`, tolerating code fences and prose around it.

    Of all the JSON values found, the first that looks like a plan wins, so a
    stray `[1]` in the prose does not hide the plan after it.
    """
    stripped = text.strip()
    whole = _try_loads(stripped)
    if whole is not None:
        return whole  # pure JSON: judged as it is, even if empty or not a plan
    candidates: list[Any] = [_try_loads(block.strip()) for block in _FENCE.findall(stripped)]
    decoder = json.JSONDecoder()
    for match in list(re.finditer(r"[\[{]", stripped))[:_MAX_JSON_STARTS]:
        try:
            candidates.append(decoder.raw_decode(stripped, match.start())[0])
        except (ValueError, RecursionError):
            continue
    candidates = [c for c in candidates if isinstance(c, (dict, list)) and c]
    for candidate in candidates:
        if _looks_like_plan(candidate):
            return candidate
    if candidates:
        return candidates[0]
    preview = stripped[:60].replace("\n", " ")
    raise PlanParseError(f"no JSON plan found in the model's answer (it begins {preview!r})")


def _try_loads(text: str) -> Any:
    try:
        return _loads(text)
    except PlanParseError:
        return None


def compile_plan(
    raw: str | bytes | Mapping[str, Any] | list[Any],
    *,
    strict: bool = False,
    max_tasks: int = 12,
    known_tools: Collection[str] | None = None,
) -> CompiledPlan:
    """Turn raw plan text or data into a `CompiledPlan`, or raise a typed `PlanError`.

    `known_tools`: the tool names a task may name (others are dropped, as a repair);
    None: no check.
    """
    limit = STRICT_MAX_TASKS if strict else max_tasks
    return _Compilation(strict=strict, max_tasks=limit, known_tools=known_tools).run(raw)


class _Compilation:
    """One compile: holds the repair log while the passes run."""

    def __init__(self, *, strict: bool, max_tasks: int, known_tools: Collection[str] | None = None) -> None:
        self.strict = strict
        self.max_tasks = max_tasks
        self.known_tools = None if known_tools is None else frozenset(known_tools)
        self.repairs: list[Repair] = []
        self.taken_ids: set[str] = set()  # every id given or made so far; new ids avoid them

    def fresh_id(self, base: str) -> str:
        """`base` if no task has it, else `base_2`, `base_3`, ... (never an id a task was given)."""
        candidate, n = base, 2
        while candidate in self.taken_ids:
            candidate, n = f"{base}_{n}", n + 1
        self.taken_ids.add(candidate)
        return candidate

    def repair(self, kind: str, task_id: str | None, detail: str) -> None:
        self.repairs.append(Repair(kind=kind, task_id=task_id, detail=detail))

    def run(self, raw: str | bytes | Mapping[str, Any] | list[Any]) -> CompiledPlan:
        items = self.task_items(self.load(raw))
        if not items:
            raise EmptyPlanError()
        if len(items) > self.max_tasks:
            raise PlanTooLargeError(len(items), self.max_tasks)
        self.taken_ids = {
            i for i in (_coerce_id(item.get("id")) for item in items if isinstance(item, Mapping)) if i
        }
        drafts = [self.normalise(i, item) for i, item in enumerate(items, start=1)]
        drafts = self.unique_ids([d for d in drafts if d is not None])
        if not drafts:
            raise EmptyPlanError()
        edges = self.clean_edges(drafts)
        cycle = find_cycle(edges)
        if cycle:
            raise CycleError(cycle)
        tasks = [
            Task(id=d["id"], description=d["description"], depends_on=edges[d["id"]], tools=self.tools(d))
            for d in drafts
        ]
        return CompiledPlan(plan=Plan(tasks=tuple(tasks)), repairs=tuple(self.repairs))

    # -- parsing -------------------------------------------------------------

    def load(self, raw: str | bytes | Mapping[str, Any] | list[Any]) -> Any:
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PlanParseError(f"the plan is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
        if not isinstance(raw, str):
            return raw
        return _loads(raw) if self.strict else extract_json(raw)

    def task_items(self, data: Any) -> list[Any]:
        if isinstance(data, Mapping):
            if self.strict and isinstance(data.get("tasks"), list) and set(data) != {"tasks"}:
                extra = sorted(set(data) - {"tasks"})[0]
                raise PlanParseError(f'the plan has unknown top-level field {extra!r}: only "tasks" is allowed')
            if isinstance(data.get("tasks"), list):
                return data["tasks"]
            if self.strict:
                raise PlanParseError('the plan must be a JSON object {"tasks": [...]}: no "tasks" list found')
            for key in _TASK_LIST_KEYS:
                if isinstance(data.get(key), list):
                    self.repair("renamed_task_list", None, f'the task list was under "{key}", not "tasks"')
                    return data[key]
            lists = [(k, v) for k, v in data.items() if isinstance(v, list)]
            if len(lists) == 1:
                key, items = lists[0]
                self.repair("renamed_task_list", None, f'the task list was under "{key}", not "tasks"')
                return items
            if _looks_like_task(data):
                self.repair("wrapped_single_task", None, "the answer was one task object, not a list")
                return [data]
        elif isinstance(data, list) and not self.strict:
            self.repair("unwrapped_task_list", None, 'the answer was a bare JSON array, not {"tasks": [...]}')
            return data
        kind = type(data).__name__
        raise PlanParseError(f'the plan must be a JSON object {{"tasks": [...]}}, not a JSON {kind}')

    def normalise(self, position: int, item: Any) -> dict[str, Any] | None:
        """One task as {id, description, depends_on: list[str]} or None to drop it."""
        if isinstance(item, str) and not self.strict:
            new_id = self.fresh_id(f"t{position}")
            self.repair("wrapped_string_task", new_id, f"task #{position} was a bare string")
            item = {"id": new_id, "description": item}
        if not isinstance(item, Mapping):
            raise PlanParseError(f"task #{position} is a JSON {type(item).__name__}, not an object")
        if self.strict:
            unknown = sorted(set(item) - _STRICT_TASK_KEYS)
            if unknown:
                raise PlanParseError(
                    f"task #{position} has unknown field {unknown[0]!r}: a task has only "
                    "'id', 'description', 'depends_on' and 'tools'"
                )
        task_id = _coerce_id(item.get("id"))
        if task_id is None:
            if self.strict:
                raise PlanParseError(f"task #{position} has no id (a non-empty string or number)")
            task_id = self.fresh_id(f"t{position}")
            self.repair("generated_id", task_id, f"task #{position} had no usable id")
        description = _first(item, ("description",) if self.strict else _DESCRIPTION_KEYS)
        if self.strict and description is not None and not isinstance(description, str):
            raise PlanParseError(f"the description of task {task_id!r} must be a string")
        if not isinstance(description, str):
            description = None if description is None else json.dumps(description)
        if not description or not description.strip():
            if self.strict:
                raise PlanParseError(f"task {task_id!r} has no description")
            self.repair("dropped_empty_task", task_id, f"task {task_id!r} had no description")
            return None
        return {
            "id": task_id,
            "description": description.strip(),
            "depends_on": self.dependencies(task_id, item),
            "tools": self.tool_names(task_id, item.get("tools")),
        }

    def tool_names(self, task_id: str, value: Any) -> list[str]:
        """The tool names a task gives, as a list of strings (checked against the run's later)."""
        if value is None:
            return []
        if isinstance(value, str) and not self.strict:
            self.repair("coerced_tools", task_id, f"tools was {value!r}, not a list")
            value = [p for p in re.split(r"[,\s]+", value) if p]
        if not isinstance(value, list):
            if self.strict:
                raise PlanParseError(f"tools of task {task_id!r} must be a list of tool names")
            self.repair("dropped_tools", task_id, f"tools was a {type(value).__name__}, not a list")
            return []
        out: list[str] = []
        for name in value:
            if not isinstance(name, str) or not name.strip():
                if self.strict:
                    raise PlanParseError(f"task {task_id!r} names an invalid tool {name!r}")
                self.repair("dropped_invalid_tool", task_id, f"tool {name!r} is not a name")
                continue
            name = name.strip()
            if name in out:
                if self.strict:
                    raise PlanParseError(f"task {task_id!r} names tool {name!r} twice")
                self.repair("dropped_duplicate_tool", task_id, f"task {task_id!r} named tool {name!r} twice")
                continue
            out.append(name)
        return out

    def tools(self, draft: Mapping[str, Any]) -> tuple[str, ...]:
        """The draft's tool names that the run has; each unknown one is a logged repair."""
        names = draft.get("tools") or []
        if self.known_tools is None:
            return tuple(names)
        kept: list[str] = []
        for name in names:
            if name in self.known_tools:
                kept.append(name)
            elif self.strict:
                raise PlanParseError(f"task {draft['id']!r} names unknown tool {name!r}")
            else:
                self.repair(
                    "dropped_unknown_tool", draft["id"], f"task {draft['id']!r} named unknown tool {name!r}"
                )
        return tuple(kept)

    def dependencies(self, task_id: str, item: Mapping[str, Any]) -> list[str]:
        deps = _first(item, ("depends_on",) if self.strict else _DEPENDS_KEYS)
        if deps is None:
            return []
        if isinstance(deps, (str, int, float)) and not isinstance(deps, bool):
            if self.strict:
                raise PlanParseError(f"depends_on of task {task_id!r} must be a list of ids")
            parts = [p for p in re.split(r"[,\s]+", str(deps)) if p] if isinstance(deps, str) else [deps]
            self.repair("coerced_depends_on", task_id, f"depends_on was {deps!r}, not a list")
            deps = parts
        if not isinstance(deps, list):
            if self.strict:
                raise PlanParseError(f"depends_on of task {task_id!r} must be a list of ids")
            self.repair("dropped_depends_on", task_id, f"depends_on was a {type(deps).__name__}")
            return []
        out: list[str] = []
        for dep in deps:
            dep_id = _coerce_id(dep)
            if dep_id is None:
                if self.strict:
                    raise PlanParseError(f"task {task_id!r} has an invalid dependency {dep!r}")
                self.repair("dropped_invalid_dependency", task_id, f"dependency {dep!r} is not an id")
                continue
            out.append(dep_id)
        return out

    # -- graph repairs ---------------------------------------------------------

    def unique_ids(self, drafts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        out: list[dict[str, Any]] = []
        for draft in drafts:
            first = seen.get(draft["id"])
            if first is None:
                seen[draft["id"]] = draft
                out.append(draft)
                continue
            if self.strict:
                raise DuplicateTaskIdError(draft["id"])
            if _same_text(first["description"], draft["description"]):
                first["depends_on"] += [d for d in draft["depends_on"] if d not in first["depends_on"]]
                first["tools"] += [n for n in draft["tools"] if n not in first["tools"]]
                self.repair("merged_duplicate", draft["id"], f"two tasks {draft['id']!r} said the same; merged")
                continue
            new_id = self.fresh_id(draft["id"])
            self.repair("renamed_duplicate", new_id, f"second task {draft['id']!r} renamed to {new_id!r}")
            draft["id"] = new_id
            seen[new_id] = draft
            out.append(draft)
        return out

    def clean_edges(self, drafts: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
        ids = {d["id"] for d in drafts}
        edges: dict[str, tuple[str, ...]] = {}
        for draft in drafts:
            task_id, kept = draft["id"], []
            for dep in draft["depends_on"]:
                if dep == task_id:
                    if self.strict:
                        raise SelfLoopError(task_id)
                    self.repair("dropped_self_loop", task_id, f"task {task_id!r} depended on itself")
                elif dep not in ids:
                    if self.strict:
                        raise UnknownDependencyError(task_id, dep)
                    self.repair(
                        "dropped_unknown_dependency", task_id, f"task {task_id!r} depended on unknown id {dep!r}"
                    )
                elif dep in kept:
                    if self.strict:
                        raise PlanParseError(f"task {task_id!r} lists dependency {dep!r} twice")
                    self.repair("dropped_duplicate_edge", task_id, f"task {task_id!r} listed {dep!r} twice")
                else:
                    kept.append(dep)
            edges[task_id] = tuple(kept)
        return edges


def _looks_like_task(data: Mapping[str, Any]) -> bool:
    return any(k in data for k in _DESCRIPTION_KEYS)


def _first(item: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in item:
            return item[key]
    return None


def _coerce_id(value: Any) -> str | None:
    """Ids are strings; models often write numbers. Booleans and containers are not ids."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        text = str(value).strip()
        return text or None
    return None


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())
