"""Pictures and tables of a plan for people: Mermaid graphs and Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from planner.models import Plan, Repair

__all__ = ["STATUS_COLOURS", "plan_markdown", "plan_to_mermaid", "repairs_markdown"]

STATUS_COLOURS = {
    "pending": ("#f5f5f5", "#9e9e9e"),
    "running": ("#fff3cd", "#f0ad4e"),
    "completed": ("#d4edda", "#28a745"),
    "cached": ("#d1ecf1", "#17a2b8"),
    "failed": ("#f8d7da", "#dc3545"),
    "skipped": ("#eeeeee", "#6c757d"),
}


def _label(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    # Mermaid labels are quoted; entity codes keep quotes and brackets from breaking them.
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def plan_to_mermaid(plan: Plan, statuses: Mapping[str, str] | None = None) -> str:
    """A `flowchart` of the plan, each node coloured by its status."""
    statuses = statuses or {}
    ids = {task.id: f"n{i}" for i, task in enumerate(plan.tasks)}
    lines = ["flowchart TD"]
    for task in plan.tasks:
        status = statuses.get(task.id, "pending")
        lines.append(f'    {ids[task.id]}["{_label(task.id, 16)}: {_label(task.description)}"]:::{status}')
    for task in plan.tasks:
        for dep in task.depends_on:
            lines.append(f"    {ids[dep]} --> {ids[task.id]}")
    for status, (fill, stroke) in STATUS_COLOURS.items():
        lines.append(f"    classDef {status} fill:{fill},stroke:{stroke},color:#222")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def plan_markdown(
    plan: Plan, version: int, statuses: Mapping[str, str] | None = None, reason: str | None = None
) -> str:
    """The plan version as a Mermaid graph followed by a table of its tasks."""
    statuses = statuses or {}
    rows = [
        f"| `{_cell(t.id)}` | {_cell(t.description)} | {', '.join(f'`{d}`' for d in t.depends_on) or '—'} "
        f"| {statuses.get(t.id, 'pending')} |"
        for t in plan.tasks
    ]
    header = f"## Plan v{version}" + (f"\n\n_{_cell(reason)}_" if reason else "")
    return "\n".join(
        [
            header,
            "",
            "```mermaid",
            plan_to_mermaid(plan, statuses),
            "```",
            "",
            "| id | task | depends on | status |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def repairs_markdown(repairs: Sequence[Repair], version: int) -> str:
    rows = [f"| {r.kind} | `{_cell(r.task_id or '—')}` | {_cell(r.detail)} |" for r in repairs]
    return "\n".join(
        [f"## Repairs to plan v{version}", "", "| repair | task | detail |", "|---|---|---|", *rows]
    )
