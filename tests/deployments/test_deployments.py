"""prefect.yaml for real: the project's scripts create the work pool, deploy everything
and start a process worker against a local Prefect server; goals are submitted with
`prefect deployment run`, deployments/submit_run.sh and as a `planflow.goal.submitted`
event (deployments/submit_event.py, POST /api/events); each becomes a completed flow
run. deployments/serve.py serves the flow with no worker at all."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from deploykit import (
    DAILY,
    DEPLOYMENTS,
    ON_EVENT,
    PREFECT,
    REPO_ROOT,
    SERVED,
    PrefectServer,
    Stack,
    flow_run_id_of,
    run_cmd,
    wait_for,
)

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 150.0
GIVEN_PLAN = {
    "tasks": [
        {"id": "x", "description": "do x", "depends_on": []},
        {"id": "y", "description": "do y", "depends_on": ["x"]},
    ]
}


@dataclass
class Submitted:
    """Goals submitted at once (they run side by side), checked one per test."""

    daily_key: str
    daily_id: str
    served_key: str
    served_id: str
    event_key: str
    event_goal: str
    event: dict[str, Any]


@pytest.fixture(scope="module")
def submitted(stack: Stack) -> Submitted:
    tag = uuid.uuid4().hex[:8]
    env = stack.env
    # 1. The scheduled deployment, run now with its default goal: prefect deployment run.
    daily_key = f"daily-{tag}"
    daily = run_cmd(
        [PREFECT, "deployment", "run", DAILY, "-p", f"run_key={daily_key}", "-p", f"plan={json.dumps(GIVEN_PLAN)}"],
        env, timeout=90,
    )
    assert daily.returncode == 0, daily.stderr[-3000:]
    # 2. A goal as an event (no plan: the model plans it): POST /api/events.
    event_key, event_goal = f"event-{tag}", "Summarise this week's support tickets"
    sent = run_cmd(
        [sys.executable, str(DEPLOYMENTS / "submit_event.py"), event_goal, "--run-key", event_key], env, timeout=60
    )
    assert sent.returncode == 0, sent.stderr[-3000:]
    # 3. The served deployment, through deployments/submit_run.sh.
    served_key = f"served-{tag}"
    served = run_cmd(
        [str(DEPLOYMENTS / "submit_run.sh"), "Write a haiku about queues", served_key, "--",
         "-p", f"plan={json.dumps(GIVEN_PLAN)}"],
        dict(env, PLANFLOW_DEPLOYMENT=SERVED), timeout=90,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    return Submitted(
        daily_key, flow_run_id_of(daily.stdout), served_key, flow_run_id_of(served.stdout),
        event_key, event_goal, json.loads(sent.stdout),
    )


def _ledger():
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    return Ledger(PlanflowSettings().ledger_url)  # the worker's flow runs share the session's PLANFLOW_HOME


# -- what prefect.yaml registered ----------------------------------------------------------


def test_scheduled_deployment(stack: Stack, prefect_server: PrefectServer) -> None:
    daily = stack.deployments[DAILY]
    assert daily["work_pool_name"] == "planflow"
    # Its runs beat every 30 s whichever worker runs them (deployments/zombies.yaml relies on it).
    assert daily["job_variables"] == {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}}
    assert daily["entrypoint"] == "flows/plan_and_execute.py:plan_and_execute"
    assert daily["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
    ]
    (schedule,) = daily["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 7 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert daily["parameters"]["goal"].strip()
    assert daily["parameters"]["max_parallel"] == 4
    # The server's scheduler fills in the coming runs, each at 07:00 UTC.
    scheduled = wait_for(
        lambda: prefect_server.flow_runs(
            deployment_id={"any_": [daily["id"]]}, state={"type": {"any_": ["SCHEDULED"]}}
        ),
        60, "scheduled runs of daily-brief",
    )
    assert all(run["expected_start_time"].endswith("07:00:00Z") for run in scheduled), scheduled


def test_event_deployment_and_its_trigger(stack: Stack, prefect_server: PrefectServer) -> None:
    on_event = stack.deployments[ON_EVENT]
    assert on_event["schedules"] == []
    assert on_event["work_pool_name"] == "planflow"
    r = prefect_server.request("POST", "/automations/filter", json={})
    mine = [
        a for a in r.json()
        if any(act.get("deployment_id") == on_event["id"] for act in a["actions"])
    ]
    assert len(mine) == 1, r.json()
    (automation,) = mine
    assert automation["enabled"] is True
    assert automation["trigger"]["expect"] == ["planflow.goal.submitted"]
    assert automation["trigger"]["posture"] == "Reactive" and automation["trigger"]["threshold"] == 1
    (action,) = automation["actions"]
    assert action["type"] == "run-deployment"
    assert action["parameters"]["goal"] == "{{ event.payload.goal }}"
    assert set(action["parameters"]) == {"goal", "run_key", "plan"}


# -- goals submitted --------------------------------------------------------------------------


def test_deployment_run_of_the_scheduled_deployment_completes(
    submitted: Submitted, stack: Stack, prefect_server: PrefectServer
) -> None:
    run = prefect_server.wait_final(submitted.daily_id, RUN_TIMEOUT, stack.logs)
    assert run["state_type"] == "COMPLETED", (run["state"], stack.logs())
    assert run["name"] == submitted.daily_key
    assert run["parameters"]["goal"] == stack.deployments[DAILY]["parameters"]["goal"]
    record = _ledger().run(submitted.daily_key)
    assert record.status == "completed" and record.answer == "result of node:y"
    assert record.flow_run_id == submitted.daily_id


def test_event_creates_a_run_that_completes(
    submitted: Submitted, stack: Stack, prefect_server: PrefectServer
) -> None:
    event = submitted.event
    assert event["event"] == "planflow.goal.submitted"
    assert event["payload"] == {"goal": submitted.event_goal, "run_key": submitted.event_key}
    deployment_id = stack.deployments[ON_EVENT]["id"]

    def created() -> dict[str, Any] | None:
        runs = prefect_server.flow_runs(deployment_id={"any_": [deployment_id]})
        return next((r for r in runs if r["parameters"].get("run_key") == submitted.event_key), None)

    run = wait_for(created, 60, f"a flow run for the event's run key {submitted.event_key}")
    # The payload's fields became the parameters; the missing plan became null (so: planned).
    assert run["parameters"]["goal"] == submitted.event_goal
    assert run["parameters"]["plan"] is None
    run = prefect_server.wait_final(run["id"], RUN_TIMEOUT, stack.logs)
    assert run["state_type"] == "COMPLETED", (run["state"], stack.logs())
    assert run["name"] == submitted.event_key
    record = _ledger().run(submitted.event_key)
    assert record.status == "completed" and record.goal == submitted.event_goal
    assert record.answer == "result of node:second"  # the fake model's plan: first -> second


def test_serve_runs_the_flow_without_a_worker(
    submitted: Submitted, stack: Stack, prefect_server: PrefectServer
) -> None:
    run = prefect_server.wait_final(submitted.served_id, RUN_TIMEOUT, stack.logs)
    assert run["state_type"] == "COMPLETED", (run["state"], stack.logs())
    assert run["name"] == submitted.served_key
    assert run["parameters"]["goal"] == "Write a haiku about queues"
    deployment = prefect_server.request("GET", f"/deployments/name/{SERVED}").json()
    assert run["deployment_id"] == deployment["id"] and deployment["work_pool_name"] is None
    assert f"Flow run '{submitted.served_key}'" in stack.serve.tail(20_000), "serve.py did not run it"
    assert _ledger().run(submitted.served_key).answer == "result of node:y"
