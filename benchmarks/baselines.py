"""Baseline executors of a plan DAG, doing the same model work as the Prefect flow.

Same `openai.AsyncOpenAI` client, same prompts (`planner.prompts.execution_messages`
with the dependencies' results only), same completion cap; a plan with several
sinks gets the same synthesis call. What they leave out is everything that makes
ours durable: no Prefect, no persisted results, no ledger.

* `run_asyncio`: each node becomes an asyncio task the moment its last dependency
  finishes; a semaphore bounds the calls in flight to `max_parallel`.
* `run_sequential`: one call at a time in topological order (a plain agent loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import openai

from planner.models import Plan
from planner.prompts import execution_messages, synthesis_messages

__all__ = ["make_client", "run_asyncio", "run_asyncio_blocking", "run_dag", "run_sequential", "synthesis_request"]

CONTEXT_CHARS = 4000  # PlanflowSettings().context_chars default
MAX_TOKENS = 512  # PlanflowSettings().node_max_tokens default


def make_client(base_url: str, api_key: str = "sk-bench") -> openai.AsyncOpenAI:
    """Built inside the event loop that will use it (the SDK client belongs to one loop)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)


async def _call(client: openai.AsyncOpenAI, model: str, messages: list[dict[str, str]]) -> str:
    response = await client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
    return response.choices[0].message.content or ""


def _node_messages(plan: Plan, goal: str, node: str, results: dict[str, str]) -> list[dict[str, str]]:
    task = plan.by_id[node]
    return execution_messages(
        goal,
        task,
        {d: results[d] for d in task.depends_on},
        {d: plan.by_id[d] for d in task.depends_on},
        CONTEXT_CHARS,
    )


def synthesis_request(plan: Plan, goal: str, results: dict[str, str]) -> list[dict[str, str]] | None:
    """The synthesis call's messages, or None when one sink's result is the answer."""
    sinks = plan.graph.sinks()
    if len(sinks) == 1:
        return None
    return synthesis_messages(goal, [(plan.by_id[s], results[s]) for s in sinks], CONTEXT_CHARS)


async def _synthesize(client: openai.AsyncOpenAI, model: str, plan: Plan, goal: str, results: dict[str, str]) -> str:
    messages = synthesis_request(plan, goal, results)
    return results[plan.graph.sinks()[0]] if messages is None else await _call(client, model, messages)


async def run_dag(
    plan: Plan, call_node: Callable[[str, dict[str, str]], Awaitable[str]], *, max_parallel: int
) -> dict[str, str]:
    """Each node an asyncio task the moment its last dependency finishes; at most
    `max_parallel` calls in flight. `call_node(node, results so far)` gives its result."""
    graph = plan.graph
    results: dict[str, str] = {}
    waiting = {n: len(graph.dependencies(n)) for n in graph.nodes}
    semaphore = asyncio.Semaphore(max_parallel)
    running: set[asyncio.Task[None]] = set()
    all_done = asyncio.Event()
    failure: list[BaseException] = []

    async def run(node: str) -> None:
        async with semaphore:
            results[node] = await call_node(node, results)
        for child in graph.dependents(node):
            waiting[child] -= 1
            if waiting[child] == 0:
                start(child)
        if len(results) == len(waiting):
            all_done.set()

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failure.append(task.exception())  # type: ignore[arg-type]
            all_done.set()

    def start(node: str) -> None:
        task = asyncio.create_task(run(node))
        running.add(task)
        task.add_done_callback(finished)

    for node in graph.topological_order():
        if waiting[node] == 0:
            start(node)
    await all_done.wait()
    if failure:
        for task in running:
            task.cancel()
        raise failure[0]
    return results


async def run_asyncio(
    plan: Plan | dict[str, Any], goal: str, client: openai.AsyncOpenAI, *, model: str = "fake-model", max_parallel: int = 4
) -> dict[str, Any]:
    """Execute `plan` with asyncio tasks started as dependencies complete."""
    plan = plan if isinstance(plan, Plan) else Plan.model_validate(plan)

    async def call(node: str, results: dict[str, str]) -> str:
        return await _call(client, model, _node_messages(plan, goal, node, results))

    results = await run_dag(plan, call, max_parallel=max_parallel)
    return {"answer": await _synthesize(client, model, plan, goal, results), "results": results}


def run_asyncio_blocking(plan: Plan | dict[str, Any], goal: str, base_url: str, *, max_parallel: int) -> dict[str, Any]:
    """`run_asyncio` in a fresh event loop with its own client, for benchmarks that time whole runs."""

    async def main() -> dict[str, Any]:
        client = make_client(base_url)
        try:
            return await run_asyncio(plan, goal, client, max_parallel=max_parallel)
        finally:
            await client.close()

    return asyncio.run(main())


async def run_sequential(
    plan: Plan | dict[str, Any], goal: str, client: openai.AsyncOpenAI, *, model: str = "fake-model"
) -> dict[str, Any]:
    """Execute `plan` one node at a time in topological order."""
    plan = plan if isinstance(plan, Plan) else Plan.model_validate(plan)
    results: dict[str, str] = {}
    for node in plan.graph.topological_order():
        results[node] = await _call(client, model, _node_messages(plan, goal, node, results))
    return {"answer": await _synthesize(client, model, plan, goal, results), "results": results}
