"""Asking a person: the run pauses (Prefect's `pause_flow_run` with a `RunInput`
form) and goes on with their answer.

Two moments: `--approve-plan` shows the first plan before any task runs;
`--on-exhausted ask` shows a failure that no replan is left to fix. In the
Prefect UI the paused run offers a form; from code or a script,
`prefect.flow_runs.resume_flow_run(flow_run_id, run_input={...})` answers it.
A paused run needs a Prefect API that outlives this process to be answered
from elsewhere: a Prefect server (`PREFECT_API_URL`), not the temporary one.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import pydantic
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.runtime import RunResources
from planner.render import plan_markdown
from planner.models import Plan

__all__ = ["FailureAnswer", "PlanReview", "ask_about_failure", "ask_to_approve", "with_initial_data"]

R = TypeVar("R", bound=RunInput)


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
    settings = resources.settings
    description = (
        "## Review the plan before it runs\n\n"
        + plan_markdown(plan, version)
        + "\n\nApprove it, edit it (paste a plan JSON), or abort. Current plan JSON:\n\n```json\n"
        + _pretty(plan)
        + "\n```"
    )
    return await apause_flow_run(
        wait_for_input=with_initial_data(PlanReview, description, plan_json=_pretty(plan)),
        timeout=settings.pause_timeout,
        poll_interval=settings.pause_poll_seconds,
        key=f"approve-plan-v{version}",
    )


async def ask_about_failure(
    resources: RunResources, plan: Plan, version: int, failed: str, error: str, history: list[str]
) -> FailureAnswer:
    settings = resources.settings
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
    return await apause_flow_run(
        wait_for_input=with_initial_data(FailureAnswer, description, plan_json=_pretty(plan)),
        timeout=settings.pause_timeout,
        poll_interval=settings.pause_poll_seconds,
        key=f"failure-{failed}-v{version}",
    )
