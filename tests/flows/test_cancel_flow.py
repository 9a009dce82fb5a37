"""Cancelling an in-process flow run through the Prefect API, as the UI's Cancel button does
(the flow run is set Cancelling; no worker runs it, so the run must notice by itself)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from support.fake_openai import Reply
from support.flows import plan_json, run_flow

GOAL = "Cancel me from the UI"
WAIT = 120.0


def _flow_run_and_task_states(flow_run_id: str) -> tuple[str, dict[str, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
            task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return flow_run.state.type.value, {t.name: t.state.type.value for t in task_runs}

    return asyncio.run(read())


def _press_cancel_when_b_is_in_flight(fake_llm, ledger, run_key: str, outcome: dict) -> None:
    """In another thread: once b's model call is in flight, set the flow run Cancelling the way the UI does."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        run = ledger.run(run_key)
        statuses = {n.node_id: n.status for n in ledger.nodes(run_key)}
        if run is not None and statuses.get("b") == "running" and fake_llm.calls_for("node:b"):
            break
        time.sleep(0.05)
    else:
        outcome["error"] = "b was never in flight"
        return

    async def cancel():
        async with get_client() as client:
            state = State(type=StateType.CANCELLING, name="Cancelling")
            return await client.set_flow_run_state(run.flow_run_id, state, force=True)

    outcome["result"] = asyncio.run(cancel())


@pytest.mark.slow
def test_cancel_through_the_prefect_api_then_resume(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
    fake_llm.script("node:b", Reply(hang=True), "result of b")
    outcome: dict = {}
    presser = threading.Thread(target=_press_cancel_when_b_is_in_flight, args=(fake_llm, ledger, run_key, outcome))
    presser.start()
    try:
        state, _ = run_flow(GOAL, run_key=run_key)
    finally:
        presser.join(timeout=WAIT)
    assert "error" not in outcome, outcome

    assert state.is_cancelled(), state
    run = ledger.run(run_key)
    assert (run.status, run.cancelled_by) == ("cancelled", "prefect")
    nodes = {n.node_id: n.status for n in ledger.nodes(run_key)}
    assert nodes == {"a": "completed", "b": "cancelled", "c": "pending"}
    flow_state, task_states = _flow_run_and_task_states(run.flow_run_id)
    assert flow_state == "CANCELLED"
    assert {name: s for name, s in task_states.items() if name.startswith("b:")} and all(
        s == "CANCELLED" for name, s in task_states.items() if name.startswith("b:")
    ), task_states
    assert all(s == "COMPLETED" for name, s in task_states.items() if name.startswith("a:") or name == "plan")

    # The same key again: a and the plan are replayed from cache, b and c run.
    state, result = run_flow(GOAL, run_key=run_key)
    assert state.is_completed(), result
    assert result["answer"] == "result of node:c"
    assert len(fake_llm.calls_for("plan")) == 1 and len(fake_llm.calls_for("node:a")) == 1
    assert len(fake_llm.calls_for("node:b")) == 2 and len(fake_llm.calls_for("node:c")) == 1
    assert ledger.run(run_key).cancelled_by is None
