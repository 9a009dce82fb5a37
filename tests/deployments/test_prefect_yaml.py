"""prefect.yaml and deployments/ without a server: the deployments name the real flow and
only its parameters, the event trigger maps the payload the way submit_event.py sends
it, and serve.py's trigger is the same as prefect.yaml's."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys

import pytest
import yaml
from deploykit import REPO_ROOT

DEPLOYMENTS = REPO_ROOT / "deployments"


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def by_name(config) -> dict:
    return {d["name"]: d for d in config["deployments"]}


def test_the_deployments_of_the_flow_on_the_process_pool(config, by_name) -> None:
    from flows.plan_and_execute import plan_and_execute

    assert set(by_name) == {"daily-brief", "on-goal-submitted", "tools-demo"}
    params = set(inspect.signature(plan_and_execute.fn).parameters)
    for deployment in by_name.values():
        path, func = deployment["entrypoint"].split(":")
        assert (REPO_ROOT / path).exists() and func == "plan_and_execute"
        assert deployment["work_pool"]["name"] == "planflow"
        assert set(deployment.get("parameters") or {}) <= params, "a parameter the flow does not take"
        for trigger in deployment.get("triggers") or []:
            assert set(trigger["parameters"]) <= params
    assert config["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ project.stdout }}"}}
    ]
    (step,) = config["build"]
    assert step["prefect.deployments.steps.run_shell_script"] == {"id": "project", "script": "pwd", "stream_output": False}


def test_the_tools_demo_passes_tools_and_an_mcp_server(by_name) -> None:
    params = by_name["tools-demo"]["parameters"]
    assert params["tools"] == ["examples/tools_demo.py"] and (REPO_ROOT / params["tools"][0]).is_file()
    (server,) = params["mcp"]
    assert server.split()[0] == "python" and (REPO_ROOT / server.split()[1]).is_file()
    assert params["goal"].strip() and params["max_steps"] >= 1


def test_the_schedule_is_a_daily_cron(by_name) -> None:
    daily = by_name["daily-brief"]
    (schedule,) = daily["schedules"]
    assert schedule == {"cron": "0 7 * * *", "timezone": "UTC", "active": True}
    assert daily["parameters"]["goal"].strip() and daily["parameters"]["plan"] is None


def test_the_trigger_maps_the_event_payload(by_name) -> None:
    (trigger,) = by_name["on-goal-submitted"]["triggers"]
    assert trigger["expect"] == ["planflow.goal.submitted"]
    assert trigger["match"] == {"prefect.resource.id": "planflow.*"}
    assert trigger["parameters"]["goal"] == "{{ event.payload.goal }}"
    submit_event = _module(DEPLOYMENTS / "submit_event.py", "planflow_submit_event")
    event = submit_event.goal_event("Plan a trip", "trip-1", {"tasks": []})
    assert event["event"] == trigger["expect"][0]
    assert event["resource"]["prefect.resource.id"].startswith("planflow.")
    assert set(event["payload"]) == set(trigger["parameters"])
    json.dumps(event)  # what goes over the wire


def test_serve_uses_the_same_trigger(by_name) -> None:
    (trigger,) = by_name["on-goal-submitted"]["triggers"]
    serve = _module(DEPLOYMENTS / "serve.py", "planflow_serve")
    served = serve.goal_submitted_trigger()
    assert served.parameters == trigger["parameters"]
    assert served.expect == set(trigger["expect"])
    assert served.match.model_dump() == trigger["match"]
    assert (served.posture, served.threshold) == (trigger["posture"], trigger["threshold"])


def test_the_zombie_automation_watches_runs_that_beat_often_enough(config, by_name) -> None:
    """deployments/zombies.yaml takes a run for dead after `within` seconds without a
    heartbeat; every run it watches (tag planflow) must beat well inside that window."""
    from prefect.events.schemas.automations import AutomationCore, Posture

    zombies = AutomationCore.model_validate(yaml.safe_load((DEPLOYMENTS / "zombies.yaml").read_text()))
    trigger = zombies.trigger
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
            "prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"} == trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match_related.model_dump() == {"prefect.resource.id": "prefect.tag.planflow", "prefect.resource.role": "tag"}
    (action,) = zombies.actions
    assert (action.type, action.state.value, action.force) == ("change-flow-run-state", "CRASHED", False)

    beat = config["definitions"]["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    serve = _module(DEPLOYMENTS / "serve.py", "planflow_serve")
    assert serve.HEARTBEAT_SECONDS == beat and "planflow" in serve.TAGS
    for deployment in by_name.values():
        assert "planflow" in deployment["tags"]
        assert deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == beat
    assert 30 <= int(beat) and trigger.within.total_seconds() >= 3 * int(beat)  # Prefect's minimum; late beats


@pytest.mark.parametrize("script", sorted(p.name for p in DEPLOYMENTS.glob("*.sh")) + ["../scripts/prefect_server.sh", "../scripts/postgres.sh", "../scripts/install_test_deps.sh"])
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(DEPLOYMENTS / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_submit_event_refuses_without_an_api_url(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(DEPLOYMENTS / "submit_event.py"), "a goal"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and "PREFECT_API_URL" in result.stderr
