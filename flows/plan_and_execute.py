"""The plan-and-execute flow: plan a goal, run the plan's DAG as Prefect tasks, answer.

Run it locally with `python flows/run.py "goal"`, or as a deployment (see
prefect.yaml). Every node is a persisted, content-addressed Prefect task, so a
run killed at any moment and started again with the same run key replays
finished nodes (state Cached) and pays only for what is left. When a node fails
for good, the replan subflow rewrites the remaining graph (bounded by
`max_replans`) and the new version runs in the same flow run.
"""

# No `from __future__ import annotations` here: `flow.serve` pickles this flow by
# value, and string annotations (Literal) would not resolve in the copy.
from dataclasses import dataclass
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled, State
from prefect.utilities.annotations import allow_failure, quote

from flows.cancellation import CancelRequest, RunCancelled, cancel_in_prefect, record_cancel_hook, run_cancellable
from flows.executor import ExecutionResult, execute_plan
from flows.human import FailureAnswer, ask_about_failure, ask_to_approve
from flows.replan import ReplanSpec, replan
from flows.rerun import RerunRequest, apply_rerun, check_rerun, rerun_versions_of
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
from planner.errors import LLMError, PlanError, PlanflowError, RunFailedError, TaskFailedError, UserInputError
from planner.embedded import EMBEDDED_MODEL_NAME
from planner.ledger import Ledger, this_owner
from planner.models import NodeOutcome, Plan, Task
from planner.run_keys import default_run_key, normalise_goal, run_key_with_suffix
from planner.settings import PlanflowSettings

__all__ = ["EMBEDDED_MAX_TASKS", "plan_and_execute"]

REPLAN_ACTIONS = ("retry_modified", "skip", "replan")
"""Plan-version actions that spend the replan budget (a person's edit does not)."""

EMBEDDED_NODE_MAX_TOKENS = 256

EMBEDDED_MAX_TASKS = 7
"""The embedded model's plans follow the prompt's 3-7 tasks exactly (its grammar allows no more)."""


def _run_key_for(goal: str, run_key: str | None, fresh: bool | None, flow_run_id: str) -> str:
    """The given key; else, with `fresh`, one per flow run (stable across its retries); else from the goal."""
    if run_key:
        return run_key
    return run_key_with_suffix(goal, flow_run_id[:8]) if fresh else default_run_key(goal)


def _flow_run_name() -> str:
    params = current_flow_run.parameters
    goal = str(params.get("goal") or "").strip()
    return _run_key_for(goal, params.get("run_key"), params.get("fresh"), str(current_flow_run.id))


def _settings(**overrides: Any) -> PlanflowSettings:
    return PlanflowSettings(**{k: v for k, v in overrides.items() if v is not None})


@dataclass
class _Position:
    """Where a run stands: the plan version to execute and the replans already spent."""

    plan: Plan
    version: int
    replans_used: int


@flow(name="plan-and-execute", flow_run_name=_flow_run_name, log_prints=True, on_cancellation=[record_cancel_hook])
async def plan_and_execute(
    goal: str,
    run_key: str | None = None,
    plan: dict[str, Any] | None = None,
    model: str | None = None,
    max_parallel: int | None = None,
    max_retries: int | None = None,
    replan_on_failure: bool | None = None,
    max_replans: int | None = None,
    on_exhausted: Literal["fail", "ask"] | None = None,
    approve_plan: bool | None = None,
    fresh: bool | None = None,
    tools: list[str] | None = None,
    mcp: list[str] | None = None,
    builtin_tools: bool | None = None,
    max_steps: int | None = None,
    workspace: str | None = None,
    rerun_from: str | None = None,
    rerun_description: str | None = None,
) -> dict[str, Any] | State:
    """Plan `goal` (or run the given `plan`), execute every task, and synthesise an answer.

    Parameters left as None take their value from the environment (`PLANFLOW_*`).
    `approve_plan` pauses for a person to review the first plan; `on_exhausted="ask"`
    pauses for a person when a task fails and no replan is left (see flows/human.py).
    `fresh` (for schedules) gives each flow run its own run key when none is given,
    instead of one derived from the goal, so a daily run does not replay yesterday's.
    `tools` (modules with `@tool` functions), `mcp` (MCP server commands or URLs),
    `builtin_tools`, `max_steps` and `workspace` decide what nodes can do and how long
    each may try (see planner/tools).
    `rerun_from` (a task id of the run's latest plan) makes a new plan version in which
    that task and everything downstream run again and the rest is replayed; with
    `rerun_description`, that task's text changes first (see flows/rerun.py).
    Returns {"run_key", "status", "answer", "plan_version"}; raises `RunFailedError`
    if a node fails for good and no replan is left, or a `PlanError` if no valid
    plan could be made. A cancelled run (see flows/cancellation.py) returns a Cancelled
    state, so the flow run ends Cancelled.
    """
    goal = normalise_goal(goal)
    run_key = _run_key_for(goal, run_key, fresh, str(current_flow_run.id))
    settings = _settings(
        model=model,
        max_parallel=max_parallel,
        max_retries=max_retries,
        replan_on_failure=replan_on_failure,
        max_replans=max_replans,
        on_exhausted=on_exhausted,
        approve_plan=approve_plan,
        tools=tools,
        mcp=mcp,
        builtin_tools=builtin_tools,
        max_steps=max_steps,
        workspace=workspace,
    )
    user_plan = compile_plan(plan, strict=True) if plan is not None else None
    rerun = RerunRequest.from_parameters(rerun_from, rerun_description)
    ledger = Ledger(settings.ledger_url)
    try:
        return await _run(ledger, settings, run_key, goal, user_plan, rerun)
    finally:
        ledger.close()


async def _run(
    ledger: Ledger,
    settings: PlanflowSettings,
    run_key: str,
    goal: str,
    user_plan: CompiledPlan | None,
    rerun: RerunRequest | None = None,
) -> dict[str, Any] | State:
    """Claim the run key, then plan (or resume), execute and answer; the ledger says how it ended."""
    _check_run_key(ledger, run_key, goal)
    if rerun is not None:
        check_rerun(ledger, run_key, rerun)  # before the claim: a bad request leaves the run as it was
    owner = this_owner()
    flow_run_id = str(current_flow_run.id)
    model_name = EMBEDDED_MODEL_NAME if settings.uses_embedded_model else settings.model_name
    dead = ledger.start_run(
        run_key, goal, flow_run_id=flow_run_id, model=model_name, owner=owner, prefect_api_url=_prefect_api_url()
    )
    if dead is not None and dead.flow_run_id and dead.flow_run_id != flow_run_id:
        await _mark_crashed_in_prefect(dead.flow_run_id, f"its process {dead.owner} died; resumed by {flow_run_id}")
    try:
        async with open_resources(settings, run_key, ledger, owner) as resources:
            try:
                return await run_cancellable(_plan_execute_answer(resources, goal, user_plan, rerun), flow_run_id)
            except RunCancelled as cancelled:
                return await _record_cancel(resources, flow_run_id, cancelled.request)
    except Exception as exc:  # anything else (model server, database): never leave it "running"
        if (run := ledger.run(run_key)) is not None and run.status == "running":
            ledger.finish_run(run_key, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise


async def _plan_execute_answer(
    resources: RunResources, goal: str, user_plan: CompiledPlan | None, rerun: RerunRequest | None
) -> dict[str, Any]:
    ledger, run_key = resources.ledger, resources.run_key
    try:
        position = await _starting_position(resources, goal, user_plan)
        if rerun is not None:
            position = _Position(*await apply_rerun(resources, rerun), position.replans_used)
        if resources.settings.approve_plan:
            position = await _human_review(resources, position)
        position, execution = await _execute_with_replans(resources, goal, position)
        answer = await _synthesize(resources, goal, position.plan, execution)
    except PlanflowError as exc:
        ledger.finish_run(run_key, status="failed", error=str(exc))
        await _publish_outcome(resources, None, str(exc))
        raise
    ledger.finish_run(run_key, status="completed", answer=answer)
    await _publish_outcome(resources, answer, None)
    return {"run_key": run_key, "status": "completed", "answer": answer, "plan_version": position.version}


async def _record_cancel(
    resources: RunResources, flow_run_id: str, request: CancelRequest
) -> dict[str, Any] | State:
    """The ledger says cancelled (who, when; running nodes too), then Prefect: the flow run
    ends Cancelled with the state returned here."""
    ledger, run_key = resources.ledger, resources.run_key
    changed = await resources.write(ledger.cancel_run, run_key, by=request.by, at=request.at, flow_run_id=flow_run_id)
    run = ledger.run(run_key)
    if not changed and run is not None and run.status in ("completed", "failed"):
        # The cancel came after the run had ended another way (while its artifacts were
        # published): that ending stands, in Prefect as in the ledger.
        if run.status == "completed":
            return {"run_key": run_key, "status": "completed", "answer": run.answer, "plan_version": run.plan_version}
        raise RunFailedError(run.error or "the run failed")
    by = run.cancelled_by if run is not None and run.cancelled_by else request.by
    message = f"cancelled by {by}; the work done so far is kept: resume with planflow runs resume {run_key}"
    get_run_logger().warning("Run %s %s", run_key, message)
    await cancel_in_prefect(flow_run_id, message)
    await _publish_outcome(resources, None, f"cancelled by {by}", cancelled=True)
    return Cancelled(message=message)


def _prefect_api_url() -> str | None:
    """The API this flow run lives on, for commands that act on it later (`planflow runs ...`)."""
    context = FlowRunContext.get()
    return str(context.client.api_url) if context is not None else None


async def _mark_crashed_in_prefect(flow_run_id: str, reason: str) -> None:
    """A run whose process died stays Running in Prefect; say what happened to it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        async with get_client() as client:
            old = await client.read_flow_run(flow_run_id)
            if old.state is not None and old.state.is_running():
                await client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
    except Exception as exc:  # a view of history; never a reason to fail this run
        get_run_logger().warning("Could not mark flow run %s Crashed: %s", flow_run_id, exc)


async def _publish_outcome(
    resources: RunResources, answer: str | None, error: str | None, *, cancelled: bool = False
) -> None:
    versions = resources.ledger.plan_versions(resources.run_key)
    if versions:
        latest = versions[-1]
        plan = Plan.model_validate_json(latest.plan_json)
        await resources.artifacts.results(plan, latest.version, answer, error, cancelled=cancelled)


def _check_run_key(ledger: Ledger, run_key: str, goal: str) -> None:
    existing = ledger.run(run_key)
    if existing is not None and existing.goal != goal:
        raise UserInputError(
            f"run key {run_key!r} belongs to another goal ({existing.goal[:60]!r}): "
            "pick another --run-key, or --fresh"
        )


async def _starting_position(resources: RunResources, goal: str, user_plan: CompiledPlan | None) -> _Position:
    """Resume from the ledger's latest plan version, or make (or take) the first plan."""
    ledger, run_key = resources.ledger, resources.run_key
    versions = ledger.plan_versions(run_key)
    replans_used = sum(1 for v in versions if v.action in REPLAN_ACTIONS)
    if versions:
        latest = versions[-1]
        stored_first = Plan.model_validate_json(versions[0].plan_json)
        if user_plan is None or user_plan.plan == stored_first:
            get_run_logger().info("Resuming %s at plan v%d", run_key, latest.version)
            return _Position(Plan.model_validate_json(latest.plan_json), latest.version, replans_used)
        version = latest.version + 1
        await _record_version(resources, version, user_plan, reason="plan changed by the user")
        return _Position(user_plan.plan, version, replans_used)
    compiled = user_plan or await _make_plan(resources, goal)
    await _record_version(resources, 1, compiled, reason="plan given by the user" if user_plan else "initial plan")
    get_run_logger().info("Plan v1: %d tasks, %d repairs", len(compiled.plan.tasks), len(compiled.repairs))
    return _Position(compiled.plan, 1, 0)


async def _human_review(resources: RunResources, position: _Position) -> _Position:
    """Pause once, before any task runs, for a person to approve, edit or abort the plan."""
    if any(n.status != "pending" for n in resources.ledger.nodes(resources.run_key)):
        return position  # work has started (a resume): the plan was reviewed then
    try:
        review = await ask_to_approve(resources, position.plan, position.version)
    except FlowPauseTimeout:
        raise RunFailedError(f"nobody reviewed the plan within {resources.settings.pause_timeout} s") from None
    if review.action == "abort":
        raise RunFailedError(f"aborted by a person before any task ran: {review.reason or 'no reason given'}")
    if review.action == "edit":
        edited = _person_plan(review.plan_json)
        if edited.plan != position.plan:
            version = position.version + 1
            await _record_version(resources, version, edited, reason="edited by a person before it ran", action="edited")
            return _Position(edited.plan, version, position.replans_used)
    return position


def _person_plan(plan_json: str) -> CompiledPlan:
    try:
        return compile_plan(plan_json, strict=True)
    except PlanError as exc:
        raise PlanError(f"the plan a person entered: {exc}") from None


async def _record_version(
    resources: RunResources,
    version: int,
    compiled: CompiledPlan,
    *,
    reason: str,
    action: str | None = None,
    failed_node: str | None = None,
) -> None:
    """Keep a plan version in the ledger and show it in the UI, with the final state of the one it supersedes."""
    superseded = resources.artifacts.node_states()  # before the record resets that version's unfinished nodes
    resources.ledger.record_plan_version(
        resources.run_key, version, compiled.plan, compiled.repairs, reason=reason, action=action, failed_node=failed_node
    )
    await resources.artifacts.plan(compiled.plan, version, reason, compiled.repairs, superseded=superseded)


async def _make_plan(resources: RunResources, goal: str) -> CompiledPlan:
    settings = resources.settings
    spec = PlanningSpec(
        run_key=resources.run_key,
        goal=goal,
        model=resources.model,
        max_tasks=min(settings.max_tasks, EMBEDDED_MAX_TASKS) if resources.embedded else settings.max_tasks,
        max_tokens=settings.plan_max_tokens,
        positional_schema=resources.embedded,
        tools=_catalogue(resources),
    )
    return await make_plan.with_options(**retry_options(settings))(spec)


def _catalogue(resources: RunResources) -> tuple[tuple[str, str], ...]:
    """The run's tools as the planner and replanner see them: (name, one line) each."""
    return tuple(resources.tools.catalogue()) if resources.tools is not None else ()


async def _execute_with_replans(
    resources: RunResources, goal: str, position: _Position
) -> tuple[_Position, ExecutionResult]:
    """Run the plan; after a permanent failure, replan (bounded) and run the new version."""
    settings, ledger, run_key = resources.settings, resources.ledger, resources.run_key
    outcomes: dict[str, NodeOutcome] = {}
    states: dict[str, State] = {}
    replanned: State | None = None  # the last replan's state: the new version's first tasks wait on it
    while True:
        execution = await _execute(resources, goal, position, outcomes, states, after=replanned)
        if execution.ok:
            return position, execution
        outcomes, states = execution.outcomes, execution.states
        failed_id, error = next(iter(execution.failed.items()))
        if not isinstance(error, (LLMError, TaskFailedError)):
            # The database, Prefect's API or the process failed, not the task's model call:
            # a new plan cannot fix that, and resuming the run key later can.
            raise error
        hint = None
        if not settings.replan_on_failure or position.replans_used >= settings.max_replans:
            message = _give_up_message(resources, failed_id, error, position.replans_used)
            answer = await _ask_person(resources, position, failed_id, error, message)
            if answer is None or answer.action == "abort":
                for other in execution.not_started:
                    ledger.node_skipped(run_key, other, f"not run: {failed_id} failed")
                if answer is not None:
                    message += f"; aborted by a person: {answer.reason or 'no reason given'}"
                raise RunFailedError(message, node_id=failed_id)
            if answer.action == "edit":
                edited = _person_plan(answer.plan_json)
                version = position.version + 1
                await _record_version(
                    resources, version, edited, reason="edited by a person after a failure",
                    action="edited", failed_node=failed_id,
                )
                position = _Position(edited.plan, version, position.replans_used)
                continue
            hint = answer.hint or None
        spec = ReplanSpec(
            run_key=run_key,
            goal=goal,
            version=position.version + 1,
            plan=position.plan,
            completed_results={k: v.output for k, v in outcomes.items() if k in position.plan.by_id},
            failed=failed_id,
            error=str(error),
            model=resources.model,
            max_tasks=settings.max_tasks,
            context_chars=settings.context_chars,
            max_tokens=settings.plan_max_tokens,
            hint=hint,
            tools=_catalogue(resources),
        )
        # Marked while the replanner is asked: a process killed meanwhile leaves the mark, and
        # its resume goes straight back to the replanner. A replan that fails here clears it
        # (the run fails; resuming it later tries the task again, as any failed run does).
        ledger.node_replan_pending(run_key, failed_id)
        # The replan waits on the failed node, so the run graph draws what happened.
        failed_state = execution.states.get(failed_id)
        try:
            replanned = await replan(  # quote(): the spec's values are not the run graph's edges
                quote(spec), wait_for=[allow_failure(failed_state)] if failed_state is not None else None,
                return_state=True,
            )
            outcome = await replanned.aresult()
        except Exception:
            ledger.node_replan_pending(run_key, failed_id, False)
            raise
        version = position.version + 1
        notes = " (the failing task came back unchanged)" if outcome.unchanged else ""
        await _record_version(
            resources,
            version,
            outcome.compiled,
            reason=f"{outcome.reason}{notes}",
            action=outcome.action,
            failed_node=failed_id,
        )
        for old, new in outcome.replaced.items():
            if old != failed_id:
                ledger.node_skipped(run_key, old, f"replaced in plan v{version}" + (f" by {new}" if new else ""))
        get_run_logger().warning(
            "Task %s failed (%s); plan v%d: %s — %s", failed_id, error, version, outcome.action, outcome.reason
        )
        position = _Position(outcome.plan, version, position.replans_used + 1)


async def _ask_person(
    resources: RunResources, position: _Position, failed_id: str, error: BaseException, message: str
) -> FailureAnswer | None:
    """With `on_exhausted="ask"`, pause for a person's answer; None means fail as usual."""
    if resources.settings.on_exhausted != "ask":
        return None
    history = _replan_history(resources)
    get_run_logger().warning("%s — pausing for a person to decide", message)
    try:
        return await ask_about_failure(resources, position.plan, position.version, failed_id, str(error), history)
    except FlowPauseTimeout:
        raise RunFailedError(
            f"{message}; nobody answered within {resources.settings.pause_timeout} s", node_id=failed_id
        ) from None


def _replan_history(resources: RunResources) -> list[str]:
    return [
        f"v{v.version} {v.action} after {v.failed_node}: {v.reason}"
        for v in resources.ledger.plan_versions(resources.run_key)
        if v.action
    ]


def _give_up_message(resources: RunResources, failed_id: str, error: BaseException, used: int) -> str:
    settings = resources.settings
    history = _replan_history(resources)
    message = f"task {failed_id!r} failed: {error}"
    if not settings.replan_on_failure:
        return message + " (replanning is off)"
    message += f"; no replans left ({used} of {settings.max_replans} used)"
    return message + ("; replan history: " + " | ".join(history) if history else "")


def _offered_tools(resources: RunResources, task: Task) -> tuple[str, ...]:
    """The tools a task named (those that exist), or all of them if it named none."""
    if resources.tools is None:
        return ()
    return tuple(t.name for t in resources.tools.select(task.tools))


def _node_max_tokens(resources: RunResources) -> int:
    # The 135M embedded model rambles until its cap; 256 tokens say what it can say.
    limit = resources.settings.node_max_tokens
    return min(limit, EMBEDDED_NODE_MAX_TOKENS) if resources.embedded else limit


async def _execute(
    resources: RunResources,
    goal: str,
    position: _Position,
    outcomes: dict[str, NodeOutcome],
    states: dict[str, State],
    after: State | None = None,
) -> ExecutionResult:
    """Run `position`'s plan; `after` (a replan's state) is waited for by the tasks that
    depend on nothing new, so the run graph draws the new version from its replan."""
    settings, ledger, run_key = resources.settings, resources.ledger, resources.run_key
    plan, version = position.plan, position.version
    reruns = rerun_versions_of(resources)  # nodes a person asked to rerun get keys of their own
    # One task object per plan version (its tags); each run is named from its spec.
    tags = [f"run:{run_key}", f"plan:v{version}"] if settings.task_tags else []
    node_task = execute_node.with_options(tags=tags, **retry_options(settings))
    # Its data (the new plan) is replaced by a token: Prefect would walk it and draw edges to
    # whatever made the objects in it (the plan task), where only the replan's own edge is meant.
    edge_from_replan = after.model_copy(update={"data": True}) if after is not None else None

    def run_node(node_id: str, upstream: dict[str, NodeOutcome], wait_for: list[State]) -> Any:
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
            max_tokens=_node_max_tokens(resources),
            tools=_offered_tools(resources, task),
            max_steps=settings.max_steps,
            rerun_version=reruns.get(node_id, 0),
        )
        # quote(): plain values, nothing for Prefect to walk; edges come from wait_for alone
        # (walking them also links interned strings such as the id "a" to a's result).
        if edge_from_replan is not None and all(d in done for d in task.depends_on):
            wait_for = [*wait_for, edge_from_replan]
        return node_task(quote(spec), quote(upstream), wait_for=wait_for, return_state=True)

    async def settled(node_id: str, outcome: NodeOutcome | None, error: BaseException | None, cached: bool) -> None:
        if outcome is not None:
            await resources.write(
                ledger.node_completed,
                run_key,
                node_id,
                result=outcome.output,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                cached=cached,
            )
        else:
            await resources.write(ledger.node_failed, run_key, node_id, str(error))
        if outcome is not None:
            finished.add(node_id)
        # Counted here, not queried: a ledger read per node made settling O(n^2).
        await resources.artifacts.progress(len(finished), len(plan.tasks))

    done = {k: v for k, v in outcomes.items() if k in plan.by_id}
    finished = set(done)
    failed_before, startable = _failure_awaiting_replan(resources, position, done)
    return await execute_plan(
        plan,
        run_node,
        max_parallel=settings.max_parallel,
        already_done=done,
        prior_states={k: states[k] for k in done if k in states},
        on_settled=settled,
        failed_before=failed_before,
        startable=startable,
    )


def _failure_awaiting_replan(
    resources: RunResources, position: _Position, done: dict[str, NodeOutcome]
) -> tuple[dict[str, BaseException], set[str] | None]:
    """A node of this version that failed for good while an earlier process asked the
    replanner (and was killed): it is not run again, and only what had finished then is
    replayed, so the replanner gets the same question and its cached answer."""
    records = [n for n in resources.ledger.nodes(resources.run_key) if n.plan_version == position.version]
    pending = {
        n.node_id: TaskFailedError(n.error or "failed")
        for n in records
        if n.replan_pending and n.status == "failed" and n.node_id in position.plan.by_id and n.node_id not in done
    }
    if not pending:
        return {}, None
    return pending, {n.node_id for n in records if n.status in ("completed", "cached")}


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
        result_chars=settings.result_chars,
        max_tokens=_node_max_tokens(resources),
        rerun_version=max(rerun_versions_of(resources).get(s, 0) for s in sinks),
    )
    return await synthesize_answer.with_options(**retry_options(settings))(
        quote(spec),
        quote({s: execution.outcomes[s] for s in sinks}),
        wait_for=[execution.states[s] for s in sinks if s in execution.states],
    )
