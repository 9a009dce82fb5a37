"""The Prefect tasks of a run: planning, one task per plan node, and synthesis.

Each is persisted and content-addressed (see `planner.cache_keys`), so a re-run
with the same run key replays finished work as `Cached` instead of paying for
it again. Retries are Prefect's own and apply to transient model errors only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict

from flows.runtime import current_resources
from flows.ui_fields import shown_in_ui
from planner.answers import EMBEDDED_STOP, clean_answer
from planner.cache_keys import node_cache_key, plan_cache_key, synthesis_cache_key
from planner.compiler import CompiledPlan, compile_plan
from planner.errors import PlanError, TransientLLMError
from planner.llm import Completion
from planner.embedded_plan import EMBEDDED_PLAN_SAMPLING, plan_from_relative, relative_plan_schema
from planner.models import NodeOutcome, Plan, Task, strict_json_schema
from planner.prompts import (
    PROMPT_VERSION,
    execution_messages,
    planning_messages,
    planning_retry_messages,
    synthesis_messages,
    truncate,
)
from planner.settings import PlanflowSettings

__all__ = [
    "NodeSpec",
    "call_model",
    "PlanningSpec",
    "SynthesisSpec",
    "TASK_RUN_NAME_CHARS",
    "execute_node",
    "make_plan",
    "planning_schema",
    "retry_options",
    "synthesize_answer",
]


class PlanningSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_key: str
    goal: str
    model: str
    max_tasks: int
    max_tokens: int
    positional_schema: bool = False
    """The embedded model: it plans in the relative form of `planner.embedded_plan`, under a grammar."""
    tools: tuple[tuple[str, str], ...] = ()
    """The run's tool catalogue, (name, one line) each; the planner sees it and tasks may name them."""
    prompt_version: str = PROMPT_VERSION


class NodeSpec(BaseModel):
    """Everything that defines one node's work; its cache key is derived from it."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    goal: str
    task: Task
    dependencies: tuple[Task, ...]
    model: str
    plan_version: int
    context_chars: int
    result_chars: int
    max_tokens: int
    tools: tuple[str, ...] = ()
    """Tools the node is offered; none: one completion, no loop."""
    max_steps: int = 8
    rerun_version: int = 0
    """The plan version of the rerun that last invalidated this node; 0 if none (see planner/rerun.py)."""
    prompt_version: str = PROMPT_VERSION


class SynthesisSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_key: str
    goal: str
    sinks: tuple[Task, ...]
    model: str
    context_chars: int
    result_chars: int
    max_tokens: int
    rerun_version: int = 0
    """The latest rerun version among the sinks: a rerun writes the answer again."""
    prompt_version: str = PROMPT_VERSION


async def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what retrying can fix; a 400 or a bad plan fails at once."""
    return isinstance(await state.aresult(raise_on_failure=False), TransientLLMError)


def retry_options(settings: PlanflowSettings) -> dict[str, Any]:
    """Prefect retry options for every model-calling task, from one place."""
    delays = (
        exponential_backoff(backoff_factor=settings.retry_backoff)(settings.max_retries)
        if settings.max_retries
        else 0
    )
    return {
        "retries": settings.max_retries,
        "retry_delay_seconds": delays,
        "retry_jitter_factor": settings.retry_jitter or None,
        "retry_condition_fn": _is_transient,
    }


async def call_model(**kwargs: Any) -> Completion:
    """One model call on the flow's loop, honouring `Retry-After` before Prefect retries."""
    try:
        return await current_resources().llm.complete(**kwargs)
    except TransientLLMError as exc:
        # Prefect's backoff comes on top; Retry-After (already capped) is the floor.
        if exc.retry_after:
            await asyncio.sleep(exc.retry_after)
        raise


# -- planning ------------------------------------------------------------------


def _plan_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: PlanningSpec = parameters["spec"]
    return plan_cache_key(
        run_key=spec.run_key,
        goal=spec.goal,
        model=spec.model,
        prompt_version=spec.prompt_version,
        max_tasks=spec.max_tasks,
        schema="relative" if spec.positional_schema else "open",
        tools=spec.tools,
    )


def planning_schema(spec: PlanningSpec) -> dict[str, Any]:
    """The JSON schema the planner answers in; `tools` is in it only when the run has tools."""
    if spec.positional_schema:
        return relative_plan_schema(spec.max_tasks)
    return strict_json_schema(Plan, omit=() if spec.tools else ("tools",))


@task(name="plan", task_run_name="plan", persist_result=True, cache_key_fn=shown_in_ui(_plan_key))
async def make_plan(spec: PlanningSpec) -> CompiledPlan:
    """Ask the model for a plan and compile it; on a defect, ask once more with the error.

    Tool names a task gives are checked against the run's catalogue: unknown ones
    are dropped (a logged repair); without tools, any names are dropped the same way.
    """
    schema = planning_schema(spec)
    known_tools = [name for name, _ in spec.tools]
    relative = spec.positional_schema
    sampling = {"extra_body": EMBEDDED_PLAN_SAMPLING} if relative else {}

    async def ask(messages: list[dict[str, str]]) -> str:
        completion = await call_model(
            messages=messages, purpose="plan", max_tokens=spec.max_tokens, json_schema=schema, **sampling
        )
        return completion.text

    def compiled(answer: str) -> CompiledPlan:
        return compile_plan(
            plan_from_relative(answer) if relative else answer, max_tasks=spec.max_tasks, known_tools=known_tools
        )

    answer = await ask(planning_messages(spec.goal, spec.tools, relative=relative))
    try:
        return compiled(answer)
    except PlanError as first_error:
        answer = await ask(planning_retry_messages(spec.goal, answer, str(first_error), spec.tools, relative=relative))
        try:
            return compiled(answer)
        except PlanError as second_error:
            raise second_error from None


# -- nodes ---------------------------------------------------------------------


def _node_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: NodeSpec = parameters["spec"]
    upstream: dict[str, NodeOutcome] = parameters["upstream"]
    return node_cache_key(
        run_key=spec.run_key,
        node_id=spec.task.id,
        goal=spec.goal,
        description=spec.task.description,
        model=spec.model,
        prompt_version=spec.prompt_version,
        upstream_results={dep: outcome.output for dep, outcome in upstream.items()},
        tools=spec.tools,
        max_steps=spec.max_steps,
        rerun_version=spec.rerun_version,
    )


TASK_RUN_NAME_CHARS = 80
"""Characters of a task's description in its task-run name (after `<id>: `): enough
words to tell tasks apart in the run graph and the task-run list."""


def _short(text: str, limit: int = TASK_RUN_NAME_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _node_run_name(parameters: dict[str, Any]) -> str:
    """`<id>: <short description>`: a callable, so braces in a description stay text."""
    task: Task = parameters["spec"].task
    return f"{task.id}: {_short(task.description)}"


@task(name="node", task_run_name=_node_run_name, persist_result=True, cache_key_fn=shown_in_ui(_node_key))
async def execute_node(spec: NodeSpec, upstream: dict[str, NodeOutcome]) -> NodeOutcome:
    """Run one plan node: the goal, its task and its direct dependencies' results only."""
    resources = current_resources()
    attempt = await resources.write(resources.ledger.node_attempt_started, spec.run_key, spec.task.id)
    messages = execution_messages(
        spec.goal,
        spec.task,
        {dep: outcome.output for dep, outcome in upstream.items()},
        {t.id: t for t in spec.dependencies},
        spec.context_chars,
    )
    if spec.tools:
        from flows.tool_steps import run_node_with_tools  # it builds on this module

        return await run_node_with_tools(spec, messages, first_attempt=attempt == 1)
    completion = await call_model(
        messages=messages, purpose="node", node_id=spec.task.id, max_tokens=spec.max_tokens, **_free_text_options()
    )
    text = _cleaned(completion.text, spec.goal)
    output = truncate(text, spec.result_chars)
    return NodeOutcome(
        node_id=spec.task.id,
        output=output,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        truncated=output != text,
    )


def _free_text_options() -> dict[str, Any]:
    """The embedded model stops where it would open another prompt block (see EMBEDDED_STOP)."""
    return {"extra_body": {"stop": list(EMBEDDED_STOP)}} if current_resources().embedded else {}


def _cleaned(text: str, goal: str, fallback: str = "") -> str:
    """The small embedded model leaks prompt scaffolding ("</result>", "The final answer is:");
    larger models' text is kept as written. Never empty: if nothing is left, `fallback`,
    else the raw text."""
    if not current_resources().embedded:
        return text
    return clean_answer(text, goal=goal) or fallback or text


# -- synthesis -----------------------------------------------------------------


def _synthesis_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: SynthesisSpec = parameters["spec"]
    sinks: dict[str, NodeOutcome] = parameters["sink_outcomes"]
    return synthesis_cache_key(
        run_key=spec.run_key,
        goal=spec.goal,
        model=spec.model,
        prompt_version=spec.prompt_version,
        sink_results={k: v.output for k, v in sinks.items()},
        rerun_version=spec.rerun_version,
    )


@task(name="synthesize", task_run_name="synthesize answer", persist_result=True, cache_key_fn=shown_in_ui(_synthesis_key))
async def synthesize_answer(spec: SynthesisSpec, sink_outcomes: dict[str, NodeOutcome]) -> str:
    """Write the run's answer from the sink nodes' results."""
    messages = synthesis_messages(
        spec.goal, [(t, sink_outcomes[t.id].output) for t in spec.sinks], spec.context_chars
    )
    completion = await call_model(messages=messages, purpose="synthesis", max_tokens=spec.max_tokens, **_free_text_options())
    # An answer that was all scaffolding: the final tasks' results say more than it did.
    results = "\n\n".join(sink_outcomes[t.id].output for t in spec.sinks)
    answer = _cleaned(completion.text, spec.goal, fallback=results)
    return truncate(answer, spec.result_chars)
