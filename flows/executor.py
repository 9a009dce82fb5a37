"""Runs a plan's DAG as Prefect tasks: each node starts the moment its
dependencies are done, and at most `max_parallel` nodes run at once.

Nodes are async Prefect tasks awaited on the flow's event loop (one asyncio task
each): no thread hand-off between a dependency's end and its dependent's start.
A node gets its dependencies' outcomes as values (already in memory here, so no
task reads them back from result storage) and their final states as `wait_for`,
so Prefect still records the edges and the UI draws the graph.

Nodes whose dependencies failed are never started, so they never exist in
Prefect: the remaining work after a failure is exactly the failed nodes plus
every node not yet started.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect.states import State

from planner.models import NodeOutcome, Plan

__all__ = ["ExecutionResult", "NodeRunner", "execute_plan"]

CANCEL_SETTLE_SECONDS = 10.0
"""Longest wait, after a cancel, for the running nodes to record that they ended."""

NodeRunner = Callable[[str, Mapping[str, NodeOutcome], list[State]], Awaitable[State]]
"""Runs node `id` given its dependencies' outcomes and final states (for `wait_for`); returns its final state."""


@dataclass
class ExecutionResult:
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    failed: dict[str, BaseException] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    states: dict[str, State] = field(default_factory=dict)
    """Final Prefect state of every node run in this flow run (edges for later versions)."""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_started


async def execute_plan(
    plan: Plan,
    run_node: NodeRunner,
    *,
    max_parallel: int,
    already_done: Mapping[str, NodeOutcome] | None = None,
    prior_states: Mapping[str, State] | None = None,
    on_settled: Callable[[str, NodeOutcome | None, BaseException | None, bool], Any] | None = None,
    failed_before: Mapping[str, BaseException] | None = None,
    startable: Collection[str] | None = None,
) -> ExecutionResult:
    """Execute `plan`; stop starting nodes after the first failure but let running ones finish.

    `already_done` holds outcomes of nodes finished earlier in this flow run (after a
    replan); they are not run again, and their `prior_states` are still waited for
    by dependents, so the UI keeps drawing those edges. `on_settled(node, outcome,
    error, cached)` is called as each node ends, for the ledger and the UI, in the
    order nodes settle; if it returns an awaitable, that runs beside the DAG (never
    delaying a dependent's start) and is awaited before this returns.

    `failed_before` holds nodes that failed for good in an earlier process of this run
    (killed while the replanner was being asked): they are not run again, and only the
    `startable` nodes (those finished then, replayed from cache) are, so the run reaches
    the same point it had reached, with nothing paid twice.
    """
    graph = plan.graph
    result = ExecutionResult(outcomes=dict(already_done or {}), states=dict(prior_states or {}))
    in_flight: dict[asyncio.Task[State], str] = {}
    # Bookkeeping of settled nodes (ledger, UI) runs beside the DAG, in order of settling:
    # a dependent starts the moment its dependencies' results are in, not after the writes.
    notices: list[asyncio.Future[None]] = []
    broken: list[asyncio.Future[None]] = []  # notices that failed
    started = set(result.outcomes)
    try:
        while True:
            if not result.failed:
                for node in graph.ready(result.outcomes, started=started):
                    if startable is not None and node not in startable:
                        continue
                    if len(in_flight) >= max_parallel:
                        break
                    dependencies = graph.dependencies(node)
                    upstream = {d: result.outcomes[d] for d in dependencies}
                    wait_for = [result.states[d] for d in dependencies if d in result.states]
                    started.add(node)
                    in_flight[asyncio.ensure_future(run_node(node, upstream, wait_for))] = node
            if not in_flight:
                break
            finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for done in finished:
                node = in_flight.pop(done)
                settled = await _settle(result, node, done)
                previous = notices[-1] if notices else None
                notice = asyncio.ensure_future(_notify_after(previous, on_settled, node, *settled))
                notice.add_done_callback(lambda n: _failed(n) and broken.append(n))
                notices.append(notice)
            if broken:
                break  # the ledger or the UI failed: stop starting nodes; raised below
    finally:
        # Cancelled (Ctrl-C, a cancelled flow run): the running nodes go with it, and each
        # node's engine records how it ended before anyone reads the task runs' states;
        # what already settled is still written down.
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=CANCEL_SETTLE_SECONDS)
        if notices:
            await asyncio.gather(*notices, return_exceptions=True)
    for notice in notices:
        if _failed(notice):
            raise notice.exception()  # type: ignore[misc]
    result.failed.update(failed_before or {})
    result.not_started = [
        n for n in graph.topological_order() if n not in result.outcomes and n not in result.failed
    ]
    return result


async def _settle(
    result: ExecutionResult, node: str, done: asyncio.Task[State]
) -> tuple[NodeOutcome | None, BaseException | None, bool]:
    """Record how `node` ended in `result`; return (outcome, error, cached) for `on_settled`."""
    if done.cancelled():
        raise asyncio.CancelledError(f"node {node} was cancelled")
    error: BaseException | None = done.exception()
    state = None if error is not None else done.result()
    value = await state.aresult(raise_on_failure=False) if state is not None else error
    if state is not None:
        result.states[node] = state
    if state is not None and state.is_completed() and isinstance(value, NodeOutcome):
        cached = state.name == "Cached"
        result.outcomes[node] = value
        if cached:
            result.cached.add(node)
        return value, None, cached
    if not isinstance(value, BaseException):
        value = RuntimeError(f"node ended {state.name if state is not None else 'without a state'}")
    result.failed[node] = value
    return None, value, False


def _failed(notice: asyncio.Future[None]) -> bool:
    return notice.done() and not notice.cancelled() and notice.exception() is not None


async def _notify_after(previous: asyncio.Future[None] | None, callback: Callable[..., Any] | None, *args: Any) -> None:
    """`_notify`, once the previous node's notice has run: notices run one at a time, in
    settling order, beside the DAG (two at once would race, e.g. both creating the progress
    artifact). A failed notice fails the ones after it too."""
    if previous is not None:
        await previous
    await _notify(callback, *args)


async def _notify(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is not None:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
