"""Runs a plan's DAG as Prefect tasks: each node is submitted the moment its
dependencies are done, and at most `max_parallel` nodes run at once.

A node gets its dependencies' outcomes as values (already in memory here, so no
task reads them back from result storage) and their futures as `wait_for`, so
Prefect still records the edges and the UI draws the graph.

Nodes whose dependencies failed are never submitted, so they never exist in
Prefect: the remaining work after a failure is exactly the failed nodes plus
every node not yet started.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect.futures import PrefectConcurrentFuture

from planner.models import NodeOutcome, Plan

__all__ = ["ExecutionResult", "NodeSubmitter", "execute_plan"]

NodeSubmitter = Callable[
    [str, Mapping[str, NodeOutcome], list[PrefectConcurrentFuture[Any]]], PrefectConcurrentFuture[Any]
]
"""Submits node `id` given its dependencies' outcomes and futures (for `wait_for`); returns its future."""


@dataclass
class ExecutionResult:
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    failed: dict[str, BaseException] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    futures: dict[str, PrefectConcurrentFuture[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started


async def execute_plan(
    plan: Plan,
    submit: NodeSubmitter,
    *,
    max_parallel: int,
    already_done: Mapping[str, NodeOutcome] | None = None,
    prior_futures: Mapping[str, PrefectConcurrentFuture[Any]] | None = None,
    on_settled: Callable[[str, NodeOutcome | None, BaseException | None, bool], Any] | None = None,
) -> ExecutionResult:
    """Execute `plan`; stop submitting after the first failure but let running nodes finish.

    `already_done` holds outcomes of nodes finished earlier in this flow run (after a
    replan); they are not submitted again, and their `prior_futures` are still
    waited for by dependents, so the UI keeps drawing those edges. `on_settled(node, outcome, error, cached)`
    is called as each node ends, for the ledger and the UI; if it returns an
    awaitable, that is awaited.
    """
    graph = plan.graph
    result = ExecutionResult(outcomes=dict(already_done or {}), futures=dict(prior_futures or {}))
    in_flight: dict[asyncio.Future[Any], str] = {}
    while True:
        if not result.failed:
            started = set(result.futures) | set(result.outcomes)
            for node in graph.ready(result.outcomes, started=started):
                if len(in_flight) >= max_parallel:
                    break
                dependencies = graph.dependencies(node)
                upstream = {d: result.outcomes[d] for d in dependencies}
                wait_for = [result.futures[d] for d in dependencies if d in result.futures]
                future = submit(node, upstream, wait_for)
                result.futures[node] = future
                in_flight[asyncio.wrap_future(future.wrapped_future)] = node
        if not in_flight:
            break
        finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for done in finished:
            node = in_flight.pop(done)
            future = result.futures[node]
            state = done.result()  # the wrapped future yields the final State
            value = future.result(raise_on_failure=False)
            if state.is_completed() and isinstance(value, NodeOutcome):
                cached = state.name == "Cached"
                result.outcomes[node] = value
                if cached:
                    result.cached.add(node)
                await _notify(on_settled, node, value, None, cached)
            else:
                error = value if isinstance(value, BaseException) else RuntimeError(f"node ended {state.name}")
                result.failed[node] = error
                await _notify(on_settled, node, None, error, False)
    result.not_started = [
        n for n in graph.topological_order() if n not in result.outcomes and n not in result.failed
    ]
    return result


async def _notify(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is not None:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
