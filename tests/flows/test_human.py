"""A person in the loop: the run pauses with a form and goes on with the answer."""

from __future__ import annotations

import json
import threading
import time

import pytest
from support.fake_openai import Reply
from support.flows import artifacts_by_key, plan_json, run_flow

from planner.errors import RunFailedError


@pytest.fixture(autouse=True)
def _fast_pauses(monkeypatch):
    monkeypatch.setenv("PLANFLOW_PAUSE_POLL_SECONDS", "1")
    monkeypatch.setenv("PLANFLOW_PAUSE_TIMEOUT", "120")


def run_in_background(goal, **params):
    from prefect.client.orchestration import get_client

    # Start Prefect's temporary server here first: two threads starting it at once race.
    with get_client(sync_client=True) as client:
        client.hello()
    box = {}
    thread = threading.Thread(target=lambda: box.update(out=run_flow(goal, **params)), daemon=True)
    thread.start()
    return thread, box


def answer_when_paused(ledger, run_key, run_input, timeout=90.0):
    """Wait until the run's flow run is Paused, then resume it with `run_input`."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = ledger.run(run_key)
            if run is not None and run.flow_run_id:
                state = client.read_flow_run(run.flow_run_id).state
                if state is not None and state.is_paused():
                    resume_flow_run(run.flow_run_id, run_input=run_input)
                    return run.flow_run_id
            time.sleep(0.3)
    raise AssertionError("the run never paused")


def test_a_person_edits_the_plan_before_it_runs(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
    thread, box = run_in_background("review me", run_key=run_key, approve_plan=True)
    edited = json.dumps({"tasks": [{"id": "only", "description": "just this", "depends_on": []}]})
    answer_when_paused(ledger, run_key, {"action": "edit", "plan_json": edited})
    thread.join(120)
    state, result = box["out"]
    assert state.is_completed(), result
    assert {c.key for c in fake_llm.calls} == {"plan", "node:only"}
    versions = ledger.plan_versions(run_key)
    assert [(v.version, v.action) for v in versions] == [(1, None), (2, "edited")]
    # Answered with no name (as the UI's form is): recorded as from the UI, with what the edit changed.
    (decision,) = ledger.decisions(run_key)
    assert (decision.kind, decision.action, decision.decided_by) == ("approval", "edit", "ui")
    assert decision.detail == "added only; removed a, b"


def test_a_person_gives_the_replanner_a_hint_when_replans_run_out(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
    fake_llm.script("node:b", Reply(status=400, error_message="context too long"))
    fake_llm.script("replan", json.dumps({"action": "retry_modified", "reason": "hinted",
                                          "tasks": [{"id": "b", "description": "do b briefly", "depends_on": ["a"]}]}))
    thread, box = run_in_background("ask me", run_key=run_key, max_replans=0, on_exhausted="ask")
    answer_when_paused(ledger, run_key, {"action": "replan", "hint": "keep it under 50 words"})
    thread.join(120)
    state, result = box["out"]
    assert state.is_completed(), result
    (replan_call,) = fake_llm.calls_for("replan")
    assert "keep it under 50 words" in replan_call.body["messages"][-1]["content"]
    assert [n.node_id for n in ledger.nodes(run_key) if n.status == "completed"] == ["a", "v2.1"]


def test_a_person_aborts_with_a_reason(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
    fake_llm.script("node:b", Reply(status=400))
    thread, box = run_in_background("abort me", run_key=run_key, max_replans=0, on_exhausted="ask")
    answer_when_paused(ledger, run_key, {"action": "abort", "reason": "wrong goal"})
    thread.join(120)
    state, error = box["out"]
    assert isinstance(error, RunFailedError)
    assert "aborted by a person: wrong goal" in str(error)
    assert ledger.run(run_key).status == "failed"
    assert {n.node_id: n.status for n in ledger.nodes(run_key)}["a"] == "completed"
    # The UI's results table and the report agree: c never ran, so both say skipped.
    from planner.report import build_report

    rows = artifacts_by_key(run_key, "results")["results"][-1].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    reported = {t["id"]: t["status"] for t in build_report(ledger, run_key)["tasks"]}
    assert {r["node"]: r["status"] for r in rows} == reported == {"a": "completed", "b": "failed", "c": "skipped"}


def test_a_pause_nobody_answers_is_recorded_as_timed_out(fake_llm, run_key, ledger, monkeypatch):
    monkeypatch.setenv("PLANFLOW_PAUSE_TIMEOUT", "2")
    fake_llm.script("plan", plan_json(("a", [])))
    state, _ = run_flow("nobody home", run_key=run_key, approve_plan=True)
    assert state.is_failed() and "nobody reviewed the plan within 2 s" in ledger.run(run_key).error
    (decision,) = ledger.decisions(run_key)
    assert (decision.action, decision.decided_by) == ("timed_out", "nobody") and decision.decided_at is not None
    assert ledger.open_pause(run_key) is None


def test_the_pause_form_describes_every_field_and_starts_from_the_plan_pretty_printed():
    from flows.human import FailureAnswer, PlanReview, with_initial_data
    from planner.models import Plan

    plan = Plan.model_validate({"tasks": [{"id": "a", "description": "do a", "depends_on": []}]})
    pretty = json.dumps(plan.to_json_dict(), indent=2)
    for model in (PlanReview, FailureAnswer):
        form = with_initial_data(model, "look at this", plan_json=pretty)
        schema = form.model_json_schema()["properties"]
        assert all(field.get("description") for field in schema.values()), schema
        assert schema["plan_json"]["default"] == pretty and "\n  " in pretty
        assert form._description == "look at this"
