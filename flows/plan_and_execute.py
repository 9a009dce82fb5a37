"""The plan-and-execute flow: plan a goal, run the plan's DAG as Prefect tasks, answer.

Run it locally with `python flows/run.py "goal"`, or as a deployment (see
prefect.yaml). Every node is a persisted, content-addressed Prefect task, so a
run killed at any moment and started again with the same run key replays
finished nodes (state Cached) and pays only for what is left.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run

from flows.executor import ExecutionResult, execute_plan
from flows.runtime import RunResources, open_resources
from flows.tasks import (
    NodeSpec,
    PlanningSpec,
    SynthesisSpec,
    execute_node,
    make_plan,
    retry_options,
    synthesize_answer,
)
from planner.compiler import CompiledPlan, compile_plan
from planner.errors import PlanflowError, RunFailedError
from planner.ledger import Ledger
from planner.models import NodeOutcome, Plan
from planner.run_keys import default_run_key, normalise_goal
from planner.settings import PlanflowSettings

__all__ = ["EMBEDDED_MAX_TASKS", "plan_and_execute"]

EMBEDDED_MAX_TASKS = 7
"""The embedded model's plans follow the prompt's 3-7 tasks exactly (its grammar allows no more)."""


def _flow_run_name() -> str:
    params = current_flow_run.parameters
    return params.get("run_key") or default_run_key(str(params.get("goal", "")).strip())


def _settings(**overrides: Any) -> PlanflowSettings:
    return PlanflowSettings(**{k: v for k, v in overrides.items() if v is not None})


@flow(name="plan-and-execute", flow_run_name=_flow_run_name, log_prints=True)
async def plan_and_execute(
    goal: str,
    run_key: str | None = None,
    plan: dict[str, Any] | None = None,
    model: str | None = None,
    max_parallel: int | None = None,
    max_retries: int | None = None,
) -> dict[str, Any]:
    """Plan `goal` (or run the given `plan`), execute every task, and synthesise an answer.

    Parameters left as None take their value from the environment (`PLANFLOW_*`).
    Returns {"run_key", "status", "answer"}; raises `RunFailedError` if a node
    fails for good, or a `PlanError` if no valid plan could be made.
    """
    goal = normalise_goal(goal)
    run_key = run_key or default_run_key(goal)
    settings = _settings(model=model, max_parallel=max_parallel, max_retries=max_retries)
    user_plan = compile_plan(plan, strict=True) if plan is not None else None
    ledger = Ledger(settings.ledger_url)
    logger = get_run_logger()
    with open_resources(settings, run_key, ledger) as resources:
        ledger.start_run(run_key, goal, flow_run_id=str(current_flow_run.id), model=resources.model)
        try:
            compiled = user_plan or await _make_plan(resources, goal)
            ledger.record_plan_version(
                run_key,
                1,
                compiled.plan,
                compiled.repairs,
                reason="plan given by the user" if user_plan else "initial plan",
            )
            logger.info("Plan v1 for %s: %d tasks, %d repairs", run_key, len(compiled.plan.tasks), len(compiled.repairs))
            execution = await _execute(resources, goal, compiled.plan, version=1)
            if not execution.ok:
                raise _run_failed(resources, compiled.plan, execution)
            answer = await _synthesize(resources, goal, compiled.plan, execution)
        except PlanflowError as exc:
            ledger.finish_run(run_key, status="failed", error=str(exc))
            raise
        ledger.finish_run(run_key, status="completed", answer=answer)
        return {"run_key": run_key, "status": "completed", "answer": answer}


async def _make_plan(resources: RunResources, goal: str) -> CompiledPlan:
    settings = resources.settings
    spec = PlanningSpec(
        run_key=resources.run_key,
        goal=goal,
        model=resources.model,
        max_tasks=min(settings.max_tasks, EMBEDDED_MAX_TASKS) if resources.embedded else settings.max_tasks,
        max_tokens=settings.plan_max_tokens,
        positional_schema=resources.embedded,
    )
    future = make_plan.with_options(**retry_options(settings)).submit(spec)
    return await _result(future)


async def _result(future: Any) -> Any:
    """Wait for a submitted task without blocking the flow's event loop."""
    await asyncio.wrap_future(future.wrapped_future)
    return future.result()


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _execute(resources: RunResources, goal: str, plan: Plan, *, version: int) -> ExecutionResult:
    settings, ledger, run_key = resources.settings, resources.ledger, resources.run_key
    options = retry_options(settings)
    tags = [f"run:{run_key}", f"plan:v{version}"]

    def submit(node_id: str, upstream: dict[str, Any]) -> Any:
        task = plan.by_id[node_id]
        spec = NodeSpec(
            run_key=run_key,
            goal=goal,
            task=task,
            dependencies=tuple(plan.by_id[d] for d in task.depends_on),
            model=resources.model,
            plan_version=version,
            context_chars=settings.context_chars,
            result_chars=settings.result_chars,
            max_tokens=settings.node_max_tokens,
        )
        node_task = execute_node.with_options(
            task_run_name=f"{node_id}: {_short(task.description)}", tags=tags, **options
        )
        return node_task.submit(spec, upstream)

    def settled(node_id: str, outcome: NodeOutcome | None, error: BaseException | None, cached: bool) -> None:
        if outcome is not None:
            ledger.node_completed(
                run_key,
                node_id,
                result=outcome.output,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cached=cached,
            )
        else:
            ledger.node_failed(run_key, node_id, str(error))

    return await execute_plan(plan, submit, max_parallel=settings.max_parallel, on_settled=settled)


def _run_failed(resources: RunResources, plan: Plan, execution: ExecutionResult) -> RunFailedError:
    """Mark what never ran and describe the failure. (The replan subflow hooks in here.)"""
    node_id, error = next(iter(execution.failed.items()))
    for other in execution.not_started:
        resources.ledger.node_skipped(resources.run_key, other, f"not run: {node_id} failed")
    return RunFailedError(f"task {node_id!r} failed: {error}", node_id=node_id)


async def _synthesize(resources: RunResources, goal: str, plan: Plan, execution: ExecutionResult) -> str:
    sinks = plan.graph.sinks()
    if len(sinks) == 1:  # one final task: its result is the answer; no extra call
        return execution.outcomes[sinks[0]].output
    settings = resources.settings
    spec = SynthesisSpec(
        run_key=resources.run_key,
        goal=goal,
        sinks=tuple(plan.by_id[s] for s in sinks),
        model=resources.model,
        context_chars=settings.context_chars,
        max_tokens=settings.node_max_tokens,
    )
    future = synthesize_answer.with_options(**retry_options(settings)).submit(
        spec, {s: execution.futures.get(s, execution.outcomes[s]) for s in sinks}
    )
    return await _result(future)
