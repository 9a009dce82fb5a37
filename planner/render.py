"""Pictures and tables of a plan for people: Mermaid graphs and Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from planner.models import Plan, Repair, Task
from planner.plan_diff import PlanDiff

__all__ = [
    "STATUS_COLOURS",
    "STATUS_MEANINGS",
    "change_markdown",
    "diff_markdown",
    "legend_markdown",
    "plan_markdown",
    "plan_to_mermaid",
    "repairs_markdown",
    "replan_markdown",
    "tasks_table",
]

STATUS_COLOURS = {
    "pending": ("#f5f5f5", "#9e9e9e"),
    "running": ("#fff3cd", "#f0ad4e"),
    "completed": ("#d4edda", "#28a745"),
    "cached": ("#d1ecf1", "#17a2b8"),
    "failed": ("#f8d7da", "#dc3545"),
    "skipped": ("#eeeeee", "#6c757d"),
    "cancelled": ("#fce4ec", "#ad1457"),
    "replaced": ("#e2d9f3", "#6f42c1"),
}

STATUS_MEANINGS = {
    "pending": "not run yet",
    "running": "running now",
    "completed": "ran and finished",
    "cached": "finished earlier; its result was replayed",
    "failed": "failed for good",
    "skipped": "never ran in this version",
    "cancelled": "running when the run was cancelled; a resume runs it again",
    "replaced": "never ran; the next version dropped or replaced it",
}


def _label(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    # Mermaid labels are quoted; entity codes keep quotes and brackets from breaking them.
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _shown(statuses: Mapping[str, str], plan: Plan) -> list[str]:
    """The statuses the plan's nodes are in, in legend order; none if all are pending."""
    present = {statuses.get(t.id, "pending") for t in plan.tasks}
    return [s for s in STATUS_COLOURS if s in present] if present != {"pending"} else []


def plan_to_mermaid(plan: Plan, statuses: Mapping[str, str] | None = None) -> str:
    """A `flowchart` of the plan, each node coloured by its status, with a legend of
    the colours used (none while every node is pending)."""
    statuses = statuses or {}
    ids = {task.id: f"n{i}" for i, task in enumerate(plan.tasks)}
    lines = ["flowchart TD"]
    for task in plan.tasks:
        status = statuses.get(task.id, "pending")
        lines.append(f'    {ids[task.id]}["{_label(task.id, 16)}: {_label(task.description)}"]:::{status}')
    for task in plan.tasks:
        for dep in task.depends_on:
            lines.append(f"    {ids[dep]} --> {ids[task.id]}")
    if shown := _shown(statuses, plan):
        # `class` statements, not `:::`, so a count of `:::status` counts plan nodes only.
        lines += ["    subgraph legend [Legend]", "        direction LR"]
        lines += [f'        legend_{s}["{s}"]' for s in shown]
        lines += ["    end", *(f"    class legend_{s} {s}" for s in shown)]
    for status, (fill, stroke) in STATUS_COLOURS.items():
        lines.append(f"    classDef {status} fill:{fill},stroke:{stroke},color:#222")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(f"`{_cell(i)}`" for i in ids) or "—"


def legend_markdown(plan: Plan, statuses: Mapping[str, str]) -> str:
    """One line saying what each status shown means; empty while every node is pending."""
    shown = _shown(statuses, plan)
    return ("**Legend:** " + "; ".join(f"**{s}**: {STATUS_MEANINGS[s]}" for s in shown)) if shown else ""


def tasks_table(tasks: Sequence[Task], statuses: Mapping[str, str] | None = None) -> list[str]:
    """Markdown table lines: id, task, dependencies and (with `statuses`) status."""
    if statuses is None:
        rows = [f"| `{_cell(t.id)}` | {_cell(t.description)} | {_ids(t.depends_on)} |" for t in tasks]
        return ["| id | task | depends on |", "|---|---|---|", *rows]
    rows = [
        f"| `{_cell(t.id)}` | {_cell(t.description)} | {_ids(t.depends_on)} | {statuses.get(t.id, 'pending')} |"
        for t in tasks
    ]
    return ["| id | task | depends on | status |", "|---|---|---|---|", *rows]


def plan_markdown(
    plan: Plan,
    version: int,
    statuses: Mapping[str, str] | None = None,
    reason: str | None = None,
    *,
    title: str | None = None,
    sections: Sequence[str] = (),
) -> str:
    """The plan version as a Mermaid graph followed by a table of its tasks.

    `title` replaces the heading "Plan v<version>"; `sections` (Markdown) come
    between the reason and the graph, e.g. why this version was made.
    """
    statuses = statuses or {}
    header = f"## {title or f'Plan v{version}'}" + (f"\n\n_{_cell(reason)}_" if reason else "")
    legend = legend_markdown(plan, statuses)
    return "\n".join(
        [
            header,
            *(part for section in sections if section for part in ("", section)),
            "",
            "```mermaid",
            plan_to_mermaid(plan, statuses),
            "```",
            *(["", legend] if legend else []),
            "",
            *tasks_table(plan.tasks, statuses),
        ]
    )


def diff_markdown(diff: PlanDiff, previous_version: int) -> str:
    """The change from the previous version as a small table: one row per kind of change."""
    replaced = ", ".join(f"`{_cell(old)}` → `{_cell(new)}`" for old, new in diff.replaced) or "—"
    return "\n".join(
        [
            f"**Changes from v{previous_version}:**",
            "",
            "| change | tasks |",
            "|---|---|",
            f"| kept | {_ids(diff.kept)} |",
            f"| kept, rewritten or rewired | {_ids(diff.changed)} |",
            f"| replaced | {replaced} |",
            f"| added | {_ids(diff.added)} |",
            f"| removed | {_ids(diff.removed)} |",
        ]
    )


def change_markdown(
    previous_version: int,
    diff: PlanDiff,
    *,
    action: str | None = None,
    failed: str | None = None,
    error: str | None = None,
) -> str:
    """Why a version was made: the task that failed in the previous one, its error,
    the action taken and what changed."""
    lines = []
    if failed is not None:
        lines += [f"**Failed in v{previous_version}:** `{_cell(failed)}`", "", f"**Error:** {_cell(error or '—')}", ""]
    if action is not None:
        lines += [f"**Action:** `{action}`", ""]
    return "\n".join([*lines, diff_markdown(diff, previous_version)])


def replan_markdown(
    version: int,
    failed: Task,
    error: str,
    *,
    action: str | None = None,
    reason: str | None = None,
    new_tasks: Sequence[Task] = (),
    rejected: str | None = None,
) -> str:
    """What a replan saw and decided: the failed task, its error, the decision and the new tasks."""
    lines = [
        f"## Replan for plan v{version}",
        "",
        f"**Failed task:** `{_cell(failed.id)}`: {_cell(failed.description)}",
        "",
        f"**Error:** {_cell(error)}",
        "",
    ]
    if rejected is not None:
        return "\n".join([*lines, f"**Rejected:** the replanner's answer could not be used: {_cell(rejected)}"])
    lines += [f"**Decision:** `{action}`: {_cell(reason or '')}", "", f"**New tasks in v{version}:**", ""]
    return "\n".join([*lines, *(tasks_table(new_tasks) if new_tasks else ["none"])])


def repairs_markdown(repairs: Sequence[Repair], version: int) -> str:
    rows = [f"| {r.kind} | `{_cell(r.task_id or '—')}` | {_cell(r.detail)} |" for r in repairs]
    return "\n".join(
        [f"## Repairs to plan v{version}", "", "| repair | task | detail |", "|---|---|---|", *rows]
    )
