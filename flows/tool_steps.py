"""A node that acts: its ReAct loop made durable, one Prefect task per model turn and per tool call.

Both kinds of step run nested under the node's task run, persisted and keyed by
content (`planner.cache_keys`), so a run killed in step 5 resumes at step 5:
earlier turns and calls come back `Cached`, and nothing is paid or done twice.

One exception, for speed: the first turn of a node's first attempt cannot be in
any cache yet, so it is asked directly, without a task run of its own (which
costs two more state changes and a result file on every dependency hop). If it
asks for tools, it is recorded as step 1 (under the key `model_turn` would use)
before any tool runs; if it answers, the answer is the node's result, persisted
with the node's task run. So it is exactly as durable as a node without tools:
only a kill between the model's answer and that record repeats the one call.

A tool call is also written to the ledger before it runs and after it ends.
A call found started-but-never-ended after a crash is run again only if its tool
is idempotent; otherwise the node fails naming the call, since it may or may
not have happened, and the replanner or a person decides.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.transactions import CommitMode, atransaction
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict

from flows.runtime import RunResources, current_resources
from flows.tasks import NodeSpec, call_model, retry_options
from flows.ui_fields import shown_in_ui
from planner.cache_keys import idempotency_key, tool_call_cache_key, turn_cache_key
from planner.errors import PermanentLLMError, ToolOutcomeUnknownError, TransientLLMError
from planner.llm import Completion, ToolCallRequest, redact
from planner.models import NodeOutcome
from planner.prompts import truncate
from planner.react import Observation, describe_call, parse_arguments, run_tool_loop
from planner.tools import Tool, ToolCallError

__all__ = ["model_turn", "run_node_with_tools", "tool_call"]

ARGUMENTS_KEPT = 2000
"""Characters of a call's arguments kept in the ledger and the report."""


class TurnSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_key: str
    node_id: str
    step: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    model: str
    max_tokens: int
    rerun_version: int = 0


class CallSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_key: str
    node_id: str
    step: int
    index: int
    tool: str
    arguments: str
    result_chars: int
    rerun_version: int = 0


def _turn_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: TurnSpec = parameters["spec"]
    return turn_cache_key(
        run_key=spec.run_key,
        node_id=spec.node_id,
        step=spec.step,
        messages=spec.messages,
        tools=[t["function"]["name"] for t in spec.tools],
        model=spec.model,
        rerun_version=spec.rerun_version,
    )


def _turn_name(parameters: dict[str, Any]) -> str:
    spec: TurnSpec = parameters["spec"]
    return f"{spec.node_id}: step {spec.step}"


@task(name="model turn", task_run_name=_turn_name, persist_result=True, cache_key_fn=shown_in_ui(_turn_key))
async def model_turn(spec: TurnSpec) -> Completion:
    """One turn of a node's conversation: the model answers or asks for tool calls."""
    context = TaskRunContext.get()
    if context is not None and context.task_run.run_count > 1:  # a retry is another try of the node
        resources = current_resources()
        await resources.write(resources.ledger.node_attempt_started, spec.run_key, spec.node_id)
    return await call_model(
        messages=spec.messages, purpose="node", node_id=spec.node_id, max_tokens=spec.max_tokens, tools=spec.tools
    )


@task(name="model turn", task_run_name=_turn_name, persist_result=True, cache_key_fn=shown_in_ui(_turn_key))
async def recorded_turn(spec: TurnSpec, completion: Completion) -> Completion:
    """A turn already answered (a node's first, asked directly), kept as that step: a resume
    asking `model_turn` for it finds it under the same key."""
    return completion


def _call_key(context: Any, parameters: dict[str, Any]) -> str:
    spec: CallSpec = parameters["spec"]
    return tool_call_cache_key(
        run_key=spec.run_key, node_id=spec.node_id, step=spec.step, index=spec.index, tool=spec.tool,
        arguments=spec.arguments, rerun_version=spec.rerun_version,
    )


def _call_name(parameters: dict[str, Any]) -> str:
    spec: CallSpec = parameters["spec"]
    return f"{spec.node_id}: {describe_call(spec.tool, spec.arguments, limit=48)}"


@task(name="tool call", task_run_name=_call_name, persist_result=True, cache_key_fn=shown_in_ui(_call_key))
async def tool_call(spec: CallSpec) -> Observation:
    """Run one tool call at most once; every failure the model can act on comes back as an observation."""
    resources = current_resources()
    toolbox = resources.tools
    if toolbox is None or spec.tool not in toolbox:
        offered = ", ".join(toolbox.names) if toolbox else "none"
        return Observation(spec.tool, spec.arguments, error=f"there is no tool named {spec.tool!r}; tools: {offered}")
    tool = toolbox[spec.tool]
    try:
        arguments = parse_arguments(spec.arguments)
    except ValueError as exc:
        return Observation(spec.tool, spec.arguments, error=str(exc))
    ledger, write = resources.ledger, resources.write
    where = (spec.run_key, spec.node_id, spec.step, spec.index)
    rerun = {"rerun_version": spec.rerun_version}  # a rerun's call is a call of its own: it runs again
    earlier = await write(ledger.tool_call, *where, **rerun)
    if earlier is not None and earlier.finished_at is not None:  # done, but Prefect lost the result
        return Observation(spec.tool, spec.arguments, result=earlier.result, error=earlier.error)
    if earlier is not None and not tool.idempotent:
        raise ToolOutcomeUnknownError(
            f"task {spec.node_id}: `{describe_call(spec.tool, spec.arguments)}` may or may not have happened "
            f"(it started at step {spec.step} and the run stopped before it ended); {spec.tool} is not safe "
            "to repeat, so it was not run again"
        )
    secrets = _secrets(resources)
    await write(
        ledger.tool_call_started, *where, **rerun,
        tool=spec.tool, arguments=redact(spec.arguments[:ARGUMENTS_KEPT], secrets), idempotent=tool.idempotent,
    )
    observation = await _invoke(resources, tool, arguments, spec)
    await write(
        ledger.tool_call_finished, *where, **rerun,
        result=None if observation.result is None else redact(observation.result, secrets),
        error=None if observation.error is None else redact(observation.error, secrets),
    )
    return observation


async def _invoke(resources: RunResources, tool: Tool, arguments: dict[str, Any], spec: CallSpec) -> Observation:
    key = idempotency_key(
        run_key=spec.run_key, node_id=spec.node_id, step=spec.step, index=spec.index, rerun_version=spec.rerun_version
    )
    timeout = resources.settings.tool_timeout
    try:
        result = await asyncio.wait_for(
            tool.invoke(arguments, idempotency_key=key if tool.takes_idempotency_key else None), timeout
        )
    except ToolCallError as exc:
        return Observation(spec.tool, spec.arguments, error=str(exc))
    except asyncio.TimeoutError:
        effect = "" if tool.idempotent else "; it may or may not have taken effect"
        return Observation(spec.tool, spec.arguments, error=f"{spec.tool} timed out after {timeout:g} s{effect}")
    except Exception as exc:  # a tool's own bug: the model is told, the node goes on
        return Observation(spec.tool, spec.arguments, error=f"{spec.tool} failed: {type(exc).__name__}: {exc}"[:500])
    return Observation(spec.tool, spec.arguments, result=truncate(result, spec.result_chars))


def _secrets(resources: RunResources) -> list[str]:
    key = resources.settings.api_key
    return [key.get_secret_value()] if key is not None else []


class _DurableSteps:
    """The loop's steps as nested Prefect tasks of one node."""

    def __init__(self, resources: RunResources, spec: NodeSpec, tools: list[Tool], *, first_attempt: bool) -> None:
        self.resources, self.spec = resources, spec
        self.definitions = [t.openai_tool() for t in tools]
        self.turn_task = model_turn.with_options(**retry_options(resources.settings))
        self.ask_first_turn_directly = first_attempt
        # A node task is retried only after its directly asked first turn failed transiently:
        # step 1 then has the tries that are left, never a fresh set on top.
        context = TaskRunContext.get()
        spent = context.task_run.run_count - 1 if context is not None else 0
        left = max(0, resources.settings.max_retries - spent)
        self.first_turn_task = self.turn_task.with_options(retries=left) if spent else self.turn_task

    async def turn(self, step: int, messages: list[dict[str, Any]]) -> Completion:
        spec = TurnSpec(
            run_key=self.spec.run_key,
            node_id=self.spec.task.id,
            step=step,
            messages=messages,
            tools=self.definitions,
            model=self.spec.model,
            max_tokens=self.spec.max_tokens,
            rerun_version=self.spec.rerun_version,
        )
        if step == 1 and self.ask_first_turn_directly:
            return await self._first_turn(spec)
        try:
            return await (self.first_turn_task if step == 1 else self.turn_task)(quote(spec))
        except TransientLLMError as exc:
            # The turn has had its retries; the node retrying too would square them.
            raise PermanentLLMError(str(exc)) from None

    async def _first_turn(self, spec: TurnSpec) -> Completion:
        """Step 1 of a first attempt, asked directly (see the module's docstring). A transient
        error fails this attempt of the node, whose retries then take the durable path."""
        completion = await call_model(
            messages=spec.messages, purpose="node", node_id=spec.node_id, max_tokens=spec.max_tokens, tools=spec.tools
        )
        if completion.tool_calls:  # kept before any tool runs: a resume replays it, never asks again
            await recorded_turn(quote(spec), quote(completion))
        return completion

    async def call(self, step: int, index: int, request: ToolCallRequest) -> Observation:
        spec = CallSpec(
            run_key=self.spec.run_key,
            node_id=self.spec.task.id,
            step=step,
            index=index,
            tool=request.name,
            arguments=request.arguments,
            result_chars=self.spec.result_chars,
            rerun_version=self.spec.rerun_version,
        )
        state = await tool_call(quote(spec), return_state=True)
        observation = await state.aresult()  # raises what the call raised (an unknown outcome)
        if state.name == "Cached":
            ledger = self.resources.ledger
            await self.resources.write(
                ledger.tool_call_replayed, spec.run_key, spec.node_id, step, index, rerun_version=spec.rerun_version
            )
        return observation


async def run_node_with_tools(spec: NodeSpec, messages: list[dict[str, Any]], *, first_attempt: bool) -> NodeOutcome:
    """The node's ReAct loop over the tools it is offered; its answer is the node's result.

    `first_attempt`: the node was never tried before (the ledger's count), so its first
    turn cannot be cached and is asked directly."""
    resources = current_resources()
    if resources.tools is None:
        raise RuntimeError(f"task {spec.task.id} was given tools but the run opened none")
    tools = [resources.tools[name] for name in spec.tools if name in resources.tools]
    # Nested tasks inherit the node task's transaction, which is LAZY: their results would
    # be written only when the node succeeds, so a node that fails or is killed at step 5
    # would keep none of steps 1-4. EAGER: each turn and call is persisted as it ends.
    async with atransaction(commit_mode=CommitMode.EAGER):
        outcome = await run_tool_loop(
            messages,
            _DurableSteps(resources, spec, tools, first_attempt=first_attempt),
            node_id=spec.task.id,
            max_steps=spec.max_steps,
        )
    output = truncate(outcome.text, spec.result_chars)
    return NodeOutcome(
        node_id=spec.task.id,
        output=output,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        truncated=output != outcome.text,
    )
