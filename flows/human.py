"""Asking a person: the run pauses (Prefect's `pause_flow_run` with a `RunInput`
form) and goes on with their answer.

Two moments: `--approve-plan` shows the first plan before any task runs;
`--on-exhausted ask` shows a failure that no replan is left to fix. In the
Prefect UI the paused run offers a form; from code or a script,
`prefect.flow_runs.resume_flow_run(flow_run_id, run_input={...})` answers it.
From a terminal, `planflow runs approve|edit|abort|hint KEY ...` (flows/cli/runs_answer.py)
sends the same run input through the run's Prefect API (the ledger records it; a
CLI run's temporary server lives as long as that CLI process, which waits).

Every pause and its answer are kept in the ledger's `decisions` (what the run
waited for; who decided what, when) and logged in the flow run: the CLI fills
the form's `decided_by` with the user name; a form sent from the UI with no
name is recorded as decided by "ui".
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import pydantic
from prefect import get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.runtime import RunResources
from planner.compiler import compile_plan
from planner.errors import PlanError
from planner.models import Plan
from planner.plan_diff import plan_diff
from planner.render import plan_markdown

__all__ = [
    "ANSWERS",
    "FailureAnswer",
    "PauseKind",
    "PlanReview",
    "answer_input",
    "ask_about_failure",
    "ask_to_approve",
    "pause_kind",
    "with_initial_data",
]

R = TypeVar("R", bound=RunInput)

PauseKind = Literal["approval", "failure"]

_DECIDED_BY = Field(
    default="", description='Your name, for the record (left empty, the decision is recorded as from "ui")'
)


class PlanReview(RunInput):
    """A person's review of the first plan."""

    action: Literal["approve", "edit", "abort"] = Field(
        default="approve", description="approve: run it; edit: run plan_json instead; abort: stop the run"
    )
    plan_json: str = Field(
        default="",
        description='With edit: the plan to run, as JSON {"tasks": [{"id", "description", "depends_on"}, ...]}; '
        "it starts as the current plan",
    )
    reason: str = Field(default="", description="With abort: why (it becomes the run's error)")
    decided_by: str = _DECIDED_BY


class FailureAnswer(RunInput):
    """A person's answer to a failure that no replan is left to fix."""

    action: Literal["replan", "edit", "abort"] = Field(
        default="replan",
        description="replan: ask the replanner once more (with your hint); edit: run plan_json; abort: stop",
    )
    hint: str = Field(default="", description="With replan: a hint for the replanner")
    plan_json: str = Field(
        default="",
        description='With edit: the whole plan to run next, JSON {"tasks": [...]}; it starts as the current plan; '
        "completed tasks keep their ids and are not run again",
    )
    reason: str = Field(default="", description="With abort: why (it becomes the run's error)")
    decided_by: str = _DECIDED_BY


_FORMS: dict[str, type[PlanReview] | type[FailureAnswer]] = {"approval": PlanReview, "failure": FailureAnswer}

ANSWERS: dict[PauseKind, dict[str, tuple[str, str | None]]] = {
    "approval": {"approve": ("approve", None), "edit": ("edit", "plan_json"), "abort": ("abort", "reason")},
    "failure": {"hint": ("replan", "hint"), "edit": ("edit", "plan_json"), "abort": ("abort", "reason")},
}
"""The terminal commands that answer each kind of pause: command -> (the form's action,
the field its text goes to)."""


def _approval_key(version: int) -> str:
    return f"approve-plan-v{version}"


def _failure_key(node_id: str, version: int) -> str:
    return f"failure-{node_id}-v{version}"


def pause_kind(pause_key: str | None) -> PauseKind | None:
    """What a paused flow run waits for, from its Prefect pause key (None: not one of ours)."""
    if pause_key and pause_key.startswith("approve-plan-v"):
        return "approval"
    if pause_key and pause_key.startswith("failure-"):
        return "failure"
    return None


def answer_input(kind: PauseKind, command: str, text: str = "", *, decided_by: str) -> dict[str, Any]:
    """The run input that `command` (a key of `ANSWERS[kind]`) sends: the keys the UI's form sends.

    Raises KeyError if the command does not answer this kind of pause.
    """
    action, field = ANSWERS[kind][command]
    values: dict[str, Any] = {"action": action, "decided_by": decided_by}
    if field is not None:
        values[field] = text
    return _FORMS[kind](**values).model_dump(include=set(values))


def with_initial_data(model: type[R], description: str, **values: Any) -> type[R]:
    """`model` with `values` as its fields' defaults and `description` shown above the form.

    Prefect's `RunInput.with_initial_data` redefines each prefilled field without
    its `Field(description=...)`, so the form would lose the help under the field.
    """
    fields: dict[str, Any] = {
        name: (model.model_fields[name].annotation, Field(default=value, description=model.model_fields[name].description))
        for name, value in values.items()
    }
    form = pydantic.create_model(model.__name__, __base__=model, **fields)
    form._description = description
    return form


def _pretty(plan: Plan) -> str:
    return json.dumps(plan.to_json_dict(), indent=2)


async def ask_to_approve(resources: RunResources, plan: Plan, version: int) -> PlanReview:
    description = (
        "## Review the plan before it runs\n\n"
        + plan_markdown(plan, version)
        + "\n\nApprove it, edit it (paste a plan JSON), or abort. Current plan JSON:\n\n```json\n"
        + _pretty(plan)
        + "\n```"
    )
    count = len(plan.tasks)
    question = f"approve plan v{version} ({count} task{'s' if count != 1 else ''}) before any task runs"
    review, decision = await _ask(
        resources, with_initial_data(PlanReview, description, plan_json=_pretty(plan)),
        kind="approval", key=_approval_key(version), version=version, question=question,
    )
    await _record(resources, decision, review, plan, version, detail=_reason(review))
    return review


async def ask_about_failure(
    resources: RunResources, plan: Plan, version: int, failed: str, error: str, history: list[str]
) -> FailureAnswer:
    statuses = {n.node_id: n.status for n in resources.ledger.nodes(resources.run_key)}
    description = "\n".join(
        [
            f"## Task `{failed}` failed and no replans are left",
            "",
            f"**Error:** {error}",
            "",
            "**Replan history:** " + ("; ".join(history) if history else "none"),
            "",
            plan_markdown(plan, version, statuses),
            "",
            "Choose: **replan** (with a hint for the replanner), **edit** (paste the whole plan to run next; "
            "completed tasks keep their ids and are not re-run), or **abort** (with a reason).",
        ]
    )
    question = _one_line(f"task {failed!r} failed and no replan is left: {error}")
    answer, decision = await _ask(
        resources, with_initial_data(FailureAnswer, description, plan_json=_pretty(plan)),
        kind="failure", key=_failure_key(failed, version), version=version, question=question, node_id=failed,
    )
    detail = answer.hint if answer.action == "replan" else _reason(answer)
    await _record(resources, decision, answer, plan, version, detail=detail)
    return answer


async def _ask(
    resources: RunResources, form: type[R], *, kind: PauseKind, key: str, version: int, question: str,
    node_id: str | None = None,
) -> tuple[R, int]:
    """Pause for `form`; the pause (and a timeout, if nobody answers) is kept in the ledger.
    Returns the answer and its decision's id in the ledger."""
    settings, ledger = resources.settings, resources.ledger
    decision = await resources.write(
        ledger.pause_asked, resources.run_key, kind=kind, pause_key=key, plan_version=version,
        question=question, node_id=node_id,
    )
    get_run_logger().info("Paused for a person: %s", question)
    try:
        answer = await apause_flow_run(
            wait_for_input=form, timeout=settings.pause_timeout, poll_interval=settings.pause_poll_seconds, key=key
        )
    except FlowPauseTimeout:
        detail = f"nobody answered within {settings.pause_timeout} s"
        await resources.write(ledger.pause_answered, decision, action="timed_out", detail=detail, decided_by="nobody")
        raise
    return answer, decision


async def _record(
    resources: RunResources, decision: int, answer: PlanReview | FailureAnswer, plan: Plan, version: int, *, detail: str
) -> None:
    """Keep who decided what (and, for an edit, what it changed) in the ledger and the flow run's log."""
    who = _one_line(answer.decided_by)[:100] or "ui"
    if answer.action == "edit":
        detail = _edit_summary(plan, answer.plan_json)
    detail = _one_line(detail)
    await resources.write(
        resources.ledger.pause_answered, decision, action=answer.action, detail=detail, decided_by=who,
    )
    get_run_logger().info(
        "Decided by %s (plan v%d): %s%s", who, version, answer.action, f": {detail}" if detail else ""
    )


def _reason(answer: PlanReview | FailureAnswer) -> str:
    return (answer.reason or "no reason given") if answer.action == "abort" else ""


def _edit_summary(before: Plan, plan_json: str) -> str:
    """What a person's edit changed, by task id (an invalid plan is named as such; the run fails on it)."""
    try:
        after = compile_plan(plan_json, strict=True).plan
    except PlanError as exc:
        return f"an invalid plan: {exc}"
    diff = plan_diff(before, after)
    parts = [f"{label} {', '.join(ids)}" for label, ids in
             (("changed", diff.changed), ("added", diff.added), ("removed", diff.removed)) if ids]
    return "; ".join(parts) if parts else "no change"


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
