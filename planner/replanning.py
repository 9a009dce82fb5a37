"""Replanning: turn a replanner's decision into the next plan version.

After a node fails for good the replanner model picks one action:

* `retry_modified`: the failed task, rewritten; it gets a fresh id and takes
  the failed task's place for its dependents;
* `skip`: the failed task is dropped; its dependents inherit its dependencies
  and are told, in their description, that it was skipped and why;
* `replan`: new tasks for all remaining work (the failed task and everything
  not yet started), which may depend on completed tasks.

New tasks get ids namespaced by plan version (`v2.1`, `v2.2`, ...), so they can
never collide with a finished node. Finished nodes are kept, unchanged, in
every later version; they are never re-executed (their results are cached).
The merged plan goes through the same compiler as a first plan.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.compiler import CompiledPlan, compile_plan, extract_json
from planner.errors import PlanError, PlanParseError
from planner.models import Plan, Repair, Task

__all__ = ["ReplanDecision", "ReplanOutcome", "ReplanReferenceError", "apply_decision", "parse_decision"]

ReplanAction = Literal["retry_modified", "skip", "replan"]


class ReplanReferenceError(PlanError):
    """A replanned task depends on a task the replan removed."""

    def __init__(self, task_id: str, removed: str) -> None:
        self.task_id, self.removed = task_id, removed
        super().__init__(f"replanned task {task_id!r} depends on {removed!r}, which the replan removed")

    def __reduce__(self):
        return (type(self), (self.task_id, self.removed))


class ReplanDecision(BaseModel):
    """What the replanner answers. Field descriptions become its JSON schema."""

    model_config = ConfigDict(extra="forbid")

    action: ReplanAction = Field(
        description="retry_modified: rewrite the failed task so it can succeed; skip: drop it, "
        "its dependents go on without it; replan: new tasks for all the remaining work."
    )
    reason: str = Field(description="Why this action, in one or two sentences.")
    tasks: list[Task] = Field(
        description="retry_modified: exactly one task, the rewritten failed task. skip: empty. "
        "replan: the new tasks; depends_on may name completed tasks or other new tasks."
    )


@dataclass(frozen=True)
class ReplanOutcome:
    compiled: CompiledPlan
    action: ReplanAction
    reason: str
    replaced: dict[str, str | None]  # old remaining id -> its replacement (None: dropped)
    unchanged: bool = False  # the "modified" task is the failed one, word for word

    @property
    def plan(self) -> Plan:
        return self.compiled.plan


def parse_decision(raw: str | Mapping[str, Any]) -> ReplanDecision:
    """Read a decision from model text (prose and fences tolerated) or data."""
    data = extract_json(raw) if isinstance(raw, str) else raw
    if not isinstance(data, Mapping):
        raise PlanParseError("the replan answer must be a JSON object {action, reason, tasks}")
    data = dict(data)
    data["tasks"] = [_loose_task(t) for t in data.get("tasks") or [] if isinstance(t, Mapping)]
    try:
        return ReplanDecision.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanParseError(f"the replan answer is not valid: {where}: {first['msg']}") from None


def _loose_task(item: Mapping[str, Any]) -> dict[str, Any]:
    deps = item.get("depends_on") or []
    if isinstance(deps, (str, int, float)):
        deps = [deps]
    tools = item.get("tools") or []
    if isinstance(tools, str):
        tools = [tools]
    if not isinstance(tools, list):
        tools = []
    return {
        "id": str(item.get("id", "")).strip(),
        "description": str(item.get("description", "")).strip(),
        "depends_on": [str(d) for d in deps if d is not None],
        "tools": list(dict.fromkeys(t.strip() for t in tools if isinstance(t, str) and t.strip())),
    }


def apply_decision(
    plan: Plan,
    *,
    completed: set[str],
    failed: str,
    decision: ReplanDecision,
    version: int,
    max_new_tasks: int = 12,
    known_tools: Collection[str] | None = None,
) -> ReplanOutcome:
    """The next plan version: completed tasks kept as they are, remaining work rewritten.

    Tasks keep the tools they name; with `known_tools`, unknown names are dropped
    as compiler repairs.
    """
    if failed not in plan.by_id:
        raise PlanError(f"failed task {failed!r} is not in the plan")
    kept = [t for t in plan.tasks if t.id in completed]
    remaining = [t for t in plan.tasks if t.id not in completed]
    if decision.action == "retry_modified":
        new_tasks, replaced, unchanged, repairs = _retry_modified(plan, remaining, failed, decision, version)
    elif decision.action == "skip":
        new_tasks, replaced, unchanged, repairs = _skip(plan, remaining, failed, decision), {failed: None}, False, []
    else:
        new_tasks, replaced, repairs = _replan(remaining, completed, decision, version, max_new_tasks)
        unchanged = False
    merged = [t.model_dump(mode="json") for t in kept + new_tasks]
    compiled = compile_plan(
        {"tasks": merged}, max_tasks=len(kept) + max(max_new_tasks, len(remaining)), known_tools=known_tools
    )
    return ReplanOutcome(
        compiled=CompiledPlan(compiled.plan, tuple(repairs) + compiled.repairs),
        action=decision.action,
        reason=decision.reason,
        replaced=replaced,
        unchanged=unchanged,
    )


def _retry_modified(
    plan: Plan, remaining: list[Task], failed: str, decision: ReplanDecision, version: int
) -> tuple[list[Task], dict[str, str | None], bool, list[Repair]]:
    if not decision.tasks:
        raise PlanParseError("retry_modified needs one task: the rewritten failed task")
    repairs: list[Repair] = []
    if len(decision.tasks) > 1:
        repairs.append(Repair(kind="ignored_extra_tasks", task_id=None, detail="retry_modified keeps only the first task"))
    old = plan.by_id[failed]
    proposal = decision.tasks[0]
    new_id = f"v{version}.1"
    removed = {failed}
    deps = proposal.depends_on or old.depends_on
    for dep in deps:
        if dep in removed or dep == proposal.id:
            raise ReplanReferenceError(new_id, dep)
    description = proposal.description or old.description
    replacement = Task(id=new_id, description=description, depends_on=tuple(deps), tools=proposal.tools or old.tools)
    unchanged = " ".join(description.split()) == " ".join(old.description.split())
    tasks = [replacement]
    for task in remaining:
        if task.id == failed:
            continue
        tasks.append(task.model_copy(update={"depends_on": tuple(new_id if d == failed else d for d in task.depends_on)}))
    return tasks, {failed: new_id}, unchanged, repairs


def _skip(plan: Plan, remaining: list[Task], failed: str, decision: ReplanDecision) -> list[Task]:
    skipped = plan.by_id[failed]
    note = f"\n(Task {failed} was skipped: {decision.reason.strip()} Proceed without its result.)"
    tasks = []
    for task in remaining:
        if task.id == failed:
            continue
        if failed in task.depends_on:
            inherited = [d for d in task.depends_on if d != failed]
            inherited += [d for d in skipped.depends_on if d not in inherited]
            task = task.model_copy(update={"description": task.description + note, "depends_on": tuple(inherited)})
        tasks.append(task)
    return tasks


def _replan(
    remaining: list[Task], completed: set[str], decision: ReplanDecision, version: int, max_new_tasks: int
) -> tuple[list[Task], dict[str, str | None], list[Repair]]:
    if not decision.tasks:
        raise PlanParseError("replan needs at least one new task")
    repairs: list[Repair] = []
    given = [t for t in decision.tasks if t.description]
    rename: dict[str, str] = {}
    for n, task in enumerate(given, start=1):
        new_id = f"v{version}.{n}"
        if task.id in completed:
            repairs.append(
                Repair(kind="renamed_id_clash", task_id=new_id, detail=f"new task reused completed id {task.id!r}")
            )
        rename.setdefault(task.id, new_id)
    removed = {t.id for t in remaining}
    tasks: list[Task] = []
    for n, task in enumerate(given, start=1):
        new_id = f"v{version}.{n}"
        deps: list[str] = []
        for dep in task.depends_on:
            if dep in rename:
                deps.append(rename[dep])
            elif dep in completed:
                deps.append(dep)
            elif dep in removed:
                raise ReplanReferenceError(new_id, dep)
            else:
                deps.append(dep)  # unknown: the compiler drops it and logs the repair
        tasks.append(Task(id=new_id, description=task.description, depends_on=tuple(deps), tools=task.tools))
    return tasks, {t.id: None for t in remaining}, repairs

