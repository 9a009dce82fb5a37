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
from typing import Literal

from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.runtime import RunResources
from planner.render import plan_markdown
from planner.models import Plan

__all__ = ["FailureAnswer", "PlanReview", "ask_about_failure", "ask_to_approve"]


class PlanReview(RunInput):
    """A person's review of the first plan."""

    action: Literal["approve", "edit", "abort"] = Field(
        default="approve", description="approve: run it; edit: run plan_json instead; abort: stop the run"
    )
    plan_json: str = Field(default="", description='With edit: the plan to run, as JSON {"tasks": [...]}')
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
        description='With edit: the whole plan to run next, JSON {"tasks": [...]}; completed tasks keep their ids',
    )
    reason: str = Field(default="", description="With abort: why (it becomes the run's error)")


async def ask_to_approve(resources: RunResources, plan: Plan, version: int) -> PlanReview:
    settings = resources.settings
    description = (
        "## Review the plan before it runs\n\n"
        + plan_markdown(plan, version)
        + "\n\nApprove it, edit it (paste a plan JSON), or abort. Current plan JSON:\n\n```json\n"
        + json.dumps(plan.to_json_dict(), indent=2)
        + "\n```"
    )
    return await apause_flow_run(
        wait_for_input=PlanReview.with_initial_data(description=description, plan_json=plan.model_dump_json()),
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
        wait_for_input=FailureAnswer.with_initial_data(description=description, plan_json=plan.model_dump_json()),
        timeout=settings.pause_timeout,
        poll_interval=settings.pause_poll_seconds,
        key=f"failure-{failed}-v{version}",
    )
