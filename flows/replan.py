"""The replan subflow: after a node fails for good, ask the replanner model how
to go on and return the next plan version.

It is a nested `@flow`, so each replan shows in the Prefect UI as a child run of
the plan-and-execute run. The model call is a persisted task keyed by the whole
failure context, so a run killed after a replan resumes without paying for it
again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel, ConfigDict

from flows.artifacts import artifact_key
from flows.tasks import call_model, retry_options
from flows.runtime import current_resources
from flows.ui_fields import shown_in_ui
from planner.cache_keys import replan_cache_key
from planner.errors import PlanError, ReplanRejectedError
from planner.models import Plan, strict_json_schema
from planner.prompts import PROMPT_VERSION, replan_messages
from planner.render import replan_markdown
from planner.replanning import ReplanDecision, ReplanOutcome, apply_decision, parse_decision

__all__ = ["ReplanSpec", "ask_replanner", "replan"]


class ReplanSpec(BaseModel):
    """The failure context the replanner sees; its cache key is derived from all of it."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    goal: str
    version: int  # the version this replan will create
    plan: Plan
    completed_results: dict[str, str]
    failed: str
    error: str
    model: str
    max_tasks: int
    context_chars: int
    max_tokens: int
    hint: str | None = None
    tools: tuple[tuple[str, str], ...] = ()
    """The run's tool catalogue: shown to the replanner; new tasks may name only these."""
    prompt_version: str = PROMPT_VERSION


def _replan_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: ReplanSpec = parameters["spec"]
    # Without tools the key is what it was before tools existed.
    dumped = spec.model_dump(mode="json", exclude=None if spec.tools else {"tools"})
    return replan_cache_key(run_key=spec.run_key, version=spec.version, spec=dumped)


@task(name="replanner", task_run_name="ask the replanner", persist_result=True, cache_key_fn=shown_in_ui(_replan_key))
async def ask_replanner(spec: ReplanSpec) -> ReplanOutcome:
    """Ask for a decision and apply it; if it cannot be applied, ask once more with the error."""
    plan = spec.plan
    completed = [(t, spec.completed_results[t.id]) for t in plan.tasks if t.id in spec.completed_results]
    remaining = [t for t in plan.tasks if t.id not in spec.completed_results]
    messages = replan_messages(
        spec.goal, completed, plan.by_id[spec.failed], spec.error, remaining, spec.context_chars, spec.hint,
        spec.tools,
    )
    # Without tools, as before tools existed: a task has no "tools" to fill in.
    schema = strict_json_schema(ReplanDecision, omit=() if spec.tools else ("tools",))

    async def attempt(msgs: list[dict[str, str]]) -> tuple[str, ReplanOutcome | PlanError]:
        completion = await call_model(
            messages=msgs, purpose="replan", max_tokens=spec.max_tokens, json_schema=schema, schema_name="replan"
        )
        answer = completion.text
        try:
            decision = parse_decision(answer)
            return answer, apply_decision(
                plan,
                completed=set(spec.completed_results),
                failed=spec.failed,
                decision=decision,
                version=spec.version,
                max_new_tasks=spec.max_tasks,
                known_tools=[name for name, _ in spec.tools],
            )
        except PlanError as exc:
            return answer, exc

    answer, result = await attempt(messages)
    if isinstance(result, PlanError):
        retry = [
            *messages,
            {"role": "assistant", "content": answer[:4000]},
            {"role": "user", "content": f"That answer was rejected: {result}. Answer again, JSON only."},
        ]
        _, result = await attempt(retry)
    if isinstance(result, PlanError):
        raise ReplanRejectedError(f"replan v{spec.version} rejected: {result}", node_id=spec.failed) from None
    return result


@flow(name="replan", flow_run_name="replan v{spec.version} after {spec.failed}")
async def replan(spec: ReplanSpec) -> ReplanOutcome:
    """Decide how to continue after `spec.failed` failed; return the next plan version.

    Its page in the UI carries an artifact: the failed task, its error, the decision
    and the new tasks (or why the replanner's answer was rejected).
    """
    settings = current_resources().settings
    failed = spec.plan.by_id[spec.failed]
    try:
        outcome = await ask_replanner.with_options(**retry_options(settings))(spec)
    except ReplanRejectedError as exc:
        await _publish(spec, replan_markdown(spec.version, failed, spec.error, rejected=str(exc)))
        raise
    new_tasks = [t for t in outcome.plan.tasks if t.id not in spec.plan.by_id]
    await _publish(
        spec,
        replan_markdown(
            spec.version, failed, spec.error, action=outcome.action, reason=outcome.reason, new_tasks=new_tasks
        ),
    )
    get_run_logger().info(
        "Task %s failed (%s); decision: %s (%s); new tasks: %s",
        spec.failed, spec.error, outcome.action, outcome.reason, ", ".join(t.id for t in new_tasks) or "none",
    )
    return outcome


async def _publish(spec: ReplanSpec, markdown: str) -> None:
    try:
        await acreate_markdown_artifact(
            markdown=markdown,
            key=artifact_key(f"replan-v{spec.version}", spec.run_key),
            description=f"Replan of {spec.run_key} after {spec.failed} failed: the decision for plan v{spec.version}",
        )
    except Exception as exc:  # the UI is a view; the run goes on without it
        get_run_logger().warning("Could not publish the replan artifact: %s", exc)
