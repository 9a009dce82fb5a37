"""How one plan version differs from the one before, and how a version ended.

Pure functions over plans and node statuses, for the run's pictures (the Prefect
artifacts): which tasks a new version kept, changed, replaced, added and
removed, and the state every task of a superseded or finished version ended in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.models import Plan

__all__ = ["FINISHED_STATUSES", "PlanDiff", "final_statuses", "plan_diff"]

FINISHED_STATUSES = ("completed", "cached", "failed", "cancelled")
"""Node statuses that say what happened to a task; any other status means it never ran."""


@dataclass(frozen=True)
class PlanDiff:
    """Task ids, in plan order: `replaced` pairs an old id with the new id that took its place."""

    kept: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # same id, new description or dependencies
    replaced: tuple[tuple[str, str], ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def plan_diff(before: Plan, after: Plan, *, failed: str | None = None, action: str | None = None) -> PlanDiff:
    """What `after` did to `before`'s tasks.

    A `retry_modified` replan rewrites the failed task under one fresh id: that
    pair is shown as a replacement, not as one task removed and another added.
    """
    old, new = before.by_id, after.by_id
    kept = tuple(t.id for t in after.tasks if t.id in old and old[t.id] == t)
    changed = tuple(t.id for t in after.tasks if t.id in old and old[t.id] != t)
    added = [t.id for t in after.tasks if t.id not in old]
    removed = [t.id for t in before.tasks if t.id not in new]
    replaced: tuple[tuple[str, str], ...] = ()
    if action == "retry_modified" and failed in removed and len(added) == 1:
        replaced = ((failed, added[0]),)
        removed.remove(failed)
        added = []
    return PlanDiff(kept=kept, changed=changed, replaced=replaced, added=tuple(added), removed=tuple(removed))


def final_statuses(plan: Plan, statuses: Mapping[str, str], successor: Plan | None = None) -> dict[str, str]:
    """The state each task of `plan` ended in, from the ledger's node `statuses`.

    Tasks that ran keep their status (completed, cached, failed, cancelled). A task that never
    ran is `replaced` when the next version (`successor`) dropped it, and `skipped`
    otherwise: when the run ended, or when the next version carries it on.
    """
    ended: dict[str, str] = {}
    for task in plan.tasks:
        status = statuses.get(task.id, "pending")
        if status in FINISHED_STATUSES:
            ended[task.id] = status
        elif successor is not None and task.id not in successor.by_id:
            ended[task.id] = "replaced"
        else:
            ended[task.id] = "skipped"
    return ended
