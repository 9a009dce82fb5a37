"""The ReAct loop inside a node: the model calls tools, reads what they return, answers.

Pure logic: how a turn and a call are made durable is the caller's business (the
flow makes each one a Prefect task), so this loop is tested with plain
coroutines. It is bounded twice: by a step budget (model turns), and by refusing
a call the model already made with the same arguments and got an answer to,
which gives it nothing new and would only spend the budget.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from planner.errors import RepeatedToolCallError, StepBudgetError
from planner.llm import Completion, ToolCallRequest

__all__ = [
    "LoopOutcome",
    "Observation",
    "StepRunner",
    "canonical_arguments",
    "describe_call",
    "parse_arguments",
    "run_tool_loop",
]


@dataclass(frozen=True)
class Observation:
    """What a tool call gave the model: its result, or the error it sees instead."""

    tool: str
    arguments: str
    result: str | None = None
    error: str | None = None

    @property
    def message_content(self) -> str:
        return f"error: {self.error}" if self.error is not None else (self.result or "")


@dataclass(frozen=True)
class LoopOutcome:
    text: str
    steps: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int


class StepRunner(Protocol):
    """Makes one model turn or one tool call (durably, in the flow)."""

    async def turn(self, step: int, messages: list[dict[str, Any]]) -> Completion: ...

    async def call(self, step: int, index: int, request: ToolCallRequest) -> Observation: ...


def parse_arguments(raw: str) -> dict[str, Any]:
    """The model's arguments as an object; raises ValueError with a message the model can act on."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc.msg} at position {exc.pos}); send a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"the arguments must be a JSON object, not {type(value).__name__}")
    return value


def canonical_arguments(raw: str) -> str:
    """The same arguments written the same way, so `{"a":1, "b":2}` equals `{"b": 2, "a": 1}`."""
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return raw.strip()


def describe_call(tool: str, raw_arguments: str, limit: int = 60) -> str:
    """`send_notice(team='ops')`: how a call reads in names and messages, cut to `limit`."""
    try:
        arguments = parse_arguments(raw_arguments)
        inner = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    except ValueError:
        inner = raw_arguments
    inner = " ".join(inner.split())
    budget = max(8, limit - len(tool) - 2)
    if len(inner) > budget:
        inner = inner[: budget - 1] + "…"
    return f"{tool}({inner})"


async def run_tool_loop(
    messages: Sequence[dict[str, Any]], runner: StepRunner, *, node_id: str, max_steps: int
) -> LoopOutcome:
    """Turn after turn until the model answers without calling a tool, or the budget is spent."""
    conversation = list(messages)
    answered: dict[tuple[str, str], int] = {}  # (tool, arguments) -> step it answered at
    prompt_tokens = completion_tokens = calls = 0
    last: list[str] = []
    for step in range(1, max_steps + 1):
        completion = await runner.turn(step, conversation)
        prompt_tokens += completion.prompt_tokens
        completion_tokens += completion.completion_tokens
        if not completion.tool_calls:
            return LoopOutcome(completion.text, step, calls, prompt_tokens, completion_tokens)
        last = [describe_call(c.name, c.arguments) for c in completion.tool_calls]
        if step == max_steps:  # its calls would run with no turn left to read them
            break
        for request in completion.tool_calls:
            earlier = answered.get((request.name, canonical_arguments(request.arguments)))
            if earlier is not None:
                raise RepeatedToolCallError(
                    f"task {node_id}: the model repeated {describe_call(request.name, request.arguments)} "
                    f"at step {step}, already answered at step {earlier}, and learned nothing new"
                )
        conversation.append(completion.assistant_message())
        observations = await _call_all(runner, step, completion.tool_calls)
        for request, observation in zip(completion.tool_calls, observations):
            calls += 1
            conversation.append({"role": "tool", "tool_call_id": request.id, "content": observation.message_content})
            if observation.error is None:
                answered[(request.name, canonical_arguments(request.arguments))] = step
    raise StepBudgetError(
        f"task {node_id} used all {max_steps} steps without answering (last asked for {', '.join(last)}); "
        "raise --max-steps or split the task"
    )


async def _call_all(runner: StepRunner, step: int, requests: Sequence[ToolCallRequest]) -> list[Observation]:
    """One turn's calls run together; if one cannot run, the others still finish before it is raised."""
    results = await asyncio.gather(
        *(runner.call(step, index, request) for index, request in enumerate(requests)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]
