"""The executor on its own: plain asyncio node runners returning Prefect states (no server needed).

What it promises about the bookkeeping of settled nodes (`on_settled`: the ledger and
the UI): it runs beside the DAG, so a dependent never waits for it; one notice at a
time, in settling order; and a failed notice stops the run from starting more nodes.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prefect.states import Completed

from planner.models import NodeOutcome, Plan

DIAMOND = Plan.model_validate({"tasks": [
    {"id": "a", "description": "do a", "depends_on": []},
    {"id": "b", "description": "do b", "depends_on": ["a"]},
    {"id": "c", "description": "do c", "depends_on": ["a"]},
    {"id": "d", "description": "do d", "depends_on": ["b", "c"]},
]})


def _runner(log: list[tuple[str, str, float]]):
    async def run_node(node: str, upstream, wait_for):
        log.append(("start", node, time.monotonic()))
        await asyncio.sleep(0.01)
        return Completed(data=NodeOutcome(node_id=node, output=f"result of {node}"))

    return run_node


def test_notices_run_beside_the_dag_one_at_a_time_in_settling_order():
    from flows.executor import execute_plan

    log: list[tuple[str, str, float]] = []
    active = 0
    most_at_once = 0

    async def on_settled(node, outcome, error, cached):
        nonlocal active, most_at_once
        active += 1
        most_at_once = max(most_at_once, active)
        log.append(("notice", node, time.monotonic()))
        await asyncio.sleep(0.2)  # a slow ledger write or artifact call
        log.append(("noticed", node, time.monotonic()))
        active -= 1

    result = asyncio.run(execute_plan(DIAMOND, _runner(log), max_parallel=4, on_settled=on_settled))
    assert set(result.outcomes) == {"a", "b", "c", "d"} and result.ok
    when = {(kind, node): t for kind, node, t in log}
    # b and c start while a's notice is still being written, not after it.
    assert when[("start", "b")] < when[("noticed", "a")] and when[("start", "c")] < when[("noticed", "a")]
    assert most_at_once == 1, "two notices ran at once"
    notices = [node for kind, node, _ in log if kind == "notice"]
    assert notices[0] == "a" and notices[-1] == "d" and sorted(notices) == ["a", "b", "c", "d"]
    assert ("noticed", "d") in when, "returned before the last notice was written"


def test_a_failed_notice_stops_new_nodes_and_is_raised():
    from flows.executor import execute_plan

    log: list[tuple[str, str, float]] = []

    async def on_settled(node, outcome, error, cached):
        if node == "a":
            raise OSError("disk on fire")

    async def main():
        run_node = _runner(log)

        async def slow_after_a(node, upstream, wait_for):
            if node != "a":
                await asyncio.sleep(0.05)  # the failed notice is seen before these settle
            return await run_node(node, upstream, wait_for)

        return await execute_plan(DIAMOND, slow_after_a, max_parallel=4, on_settled=on_settled)

    with pytest.raises(OSError, match="disk on fire"):
        asyncio.run(main())
    started = [node for kind, node, _ in log if kind == "start"]
    assert "d" not in started, started
