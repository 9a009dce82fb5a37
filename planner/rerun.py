"""Rerun from a node: a person saw a poor result and wants that task and everything
downstream done again, everything upstream kept.

A rerun makes a new plan version with the same tasks and ids (the node's text may
change) and names the nodes it invalidates: the node and its descendants. Each
node's *rerun version* is the plan version that last invalidated it (0: never).
It goes into the node's cache keys (its run, its model turns, its tool calls) and
into the ledger's identity of its tool calls, so an invalidated node really runs
again (a side effect happens again, once: that is what the person asked for),
while every other node keeps its keys and is replayed. A node never rerun keeps
the keys it always had, so runs made before reruns existed still resume.

Pure functions over plans and plan-version records; the ledger stores the result
(`Ledger.record_rerun`), flows/rerun.py applies it in a flow run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from planner.errors import UserInputError
from planner.models import Plan

__all__ = ["RerunError", "RerunPlan", "VersionLike", "plan_rerun", "rerun_info", "rerun_versions", "who_asked"]


class RerunError(UserInputError):
    """A rerun that cannot be made as asked: an unknown node, an old version's node, no plan yet."""


class VersionLike(Protocol):
    """What is read from a plan-version record (`planner.ledger.PlanVersionRecord`)."""

    version: int
    plan_json: str
    rerun_json: str | None


@dataclass(frozen=True)
class RerunPlan:
    """The version a rerun makes: `plan` (the node's text changed if asked) and the
    nodes it invalidates, `node` first, then its descendants in plan order."""

    node: str
    nodes: tuple[str, ...]
    plan: Plan
    description_changed: bool


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(ids) or "none"


def plan_rerun(
    versions: Sequence[VersionLike], node: str, description: str | None = None, *, run_key: str = "the run"
) -> RerunPlan:
    """The rerun of `node` in the latest of `versions`; `RerunError` (one line) if it cannot be made."""
    node = (node or "").strip()
    if not versions:
        raise RerunError(f"{run_key} has no plan yet, so there is nothing to rerun: resume it instead")
    latest = versions[-1]
    plan = Plan.model_validate_json(latest.plan_json)
    current = [t.id for t in plan.tasks]
    if not node:
        raise RerunError(f"name the task to rerun from; tasks of {run_key} (plan v{latest.version}): {_ids(current)}")
    if node not in plan.by_id:
        for older in reversed(versions[:-1]):
            if node in Plan.model_validate_json(older.plan_json).by_id:
                raise RerunError(
                    f"task {node!r} belongs to plan v{older.version}, not the current v{latest.version}; "
                    f"rerun one of its tasks: {_ids(current)}"
                )
        raise RerunError(f"no task {node!r} in {run_key}; its tasks (plan v{latest.version}): {_ids(current)}")
    changed = False
    if description is not None:
        text = description.strip()
        if not text:
            raise RerunError(f"the new description of task {node!r} is empty")
        old = plan.by_id[node]
        if text != old.description:
            changed = True
            tasks = tuple(t.model_copy(update={"description": text}) if t.id == node else t for t in plan.tasks)
            plan = Plan(tasks=tasks)
    invalidated = {node} | plan.graph.descendants(node)
    return RerunPlan(node, tuple(t.id for t in plan.tasks if t.id in invalidated), plan, changed)


def rerun_info(record: VersionLike) -> dict[str, Any] | None:
    """A version's rerun (`from`, `nodes`, `flow_run_id`, `previous_results`), or None if it was no rerun."""
    return json.loads(record.rerun_json) if record.rerun_json else None


def rerun_versions(versions: Iterable[VersionLike]) -> dict[str, int]:
    """Each invalidated node's rerun version: the latest plan version that invalidated it.
    Nodes never rerun are absent (their rerun version is 0)."""
    latest: dict[str, int] = {}
    for record in sorted(versions, key=lambda v: v.version):
        info = rerun_info(record)
        for node in info["nodes"] if info else ():
            latest[node] = record.version
    return latest


def who_asked(from_a_deployment: bool) -> str:
    """Who asked for a rerun: "ui" for a deployment run (the worker's user did not ask), else the user."""
    if from_a_deployment:
        return "ui"
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"
