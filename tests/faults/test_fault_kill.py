"""Kill at every step: SIGKILL a CLI run (its whole process group) during planning,
during a node, between nodes, during a replan and during synthesis; resume each with
the same --run-key. The final answer must be right, no node that had completed may
be executed again (counted on the fake model server), and the ledger, the report and
Prefect's flow runs must agree.

The five scenarios run side by side (each its own goal, so one responder serves them
all), killed as each reaches its point, then resumed side by side: ten CLI runs in
the time of about four."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from faultkit import (
    Cli,
    CliResult,
    GoalScripts,
    calls_by_goal,
    decision,
    group_alive,
    kill_each_at_its_point,
    plan_answer,
)
from support.fake_openai import Reply

pytestmark = pytest.mark.slow

LONG = 60.0  # a reply held this long is "in flight" until the kill
CHAIN = plan_answer(("a", []), ("b", ["a"]), ("c", ["b"]))
TWO_SINKS = plan_answer(("a", []), ("b", []))


@dataclass
class Scenario:
    plan: str
    replies: dict[str, list[Any]]
    kill_when: Callable[[dict[str, list[Any]], dict[str, str]], bool]  # (calls by key, node statuses)
    answer: str


def _in_flight(calls: dict[str, list[Any]], key: str) -> bool:
    return any(c.status == 0 for c in calls.get(key, []))


SCENARIOS = {
    "planning": Scenario(
        CHAIN, {"plan": [Reply(content=CHAIN, delay=LONG), CHAIN]},
        lambda calls, nodes: _in_flight(calls, "plan"), "result of node:c"),
    "a_node": Scenario(
        CHAIN, {"node:b": [Reply(content="result of node:b", delay=LONG), "result of node:b"]},
        lambda calls, nodes: nodes.get("a") == "completed" and _in_flight(calls, "node:b"), "result of node:c"),
    "between_nodes": Scenario(
        # b's reply is held a little, so that if the killed run got as far as asking for it, it is
        # in flight (not finished) at the kill; the resume asks again.
        CHAIN, {"node:a": [Reply(content="result of node:a", delay=1.0)],
                "node:b": [Reply(content="result of node:b", delay=4.0)]},
        lambda calls, nodes: nodes.get("a") == "completed", "result of node:c"),
    "a_replan": Scenario(
        CHAIN, {"node:b": [Reply(status=400, error_message="b cannot be done")],
                "replan": [Reply(content=decision("retry_modified", "simpler", [("b", "do b simply", ["a"])]),
                                 delay=LONG),
                           decision("retry_modified", "simpler", [("b", "do b simply", ["a"])])]},
        lambda calls, nodes: _in_flight(calls, "replan"), "result of node:c"),
    "synthesis": Scenario(
        TWO_SINKS, {"synthesis": [Reply(content="the final answer", delay=LONG), "the final answer"]},
        lambda calls, nodes: _in_flight(calls, "synthesis"), "the final answer"),
}


async def _prefect_flow_run_states(run_key: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_key])))
    return sorted(r.state.type.value for r in runs if r.state is not None)


@pytest.fixture(scope="module")
def killed(_fake_server, prefect_api_url, tmp_path_factory) -> Iterator[dict[str, dict[str, Any]]]:
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    tmp = tmp_path_factory.mktemp("kill")
    ledger = Ledger(PlanflowSettings().ledger_url)
    scripts = GoalScripts()
    tag = uuid.uuid4().hex[:6]
    runs = {name: {"goal": f"Kill during {name} {tag}", "run_key": f"kill-{name}-{tag}"} for name in SCENARIOS}
    for name, sc in SCENARIOS.items():
        goal = runs[name]["goal"]
        if "plan" not in sc.replies:
            scripts.script(goal, "plan", sc.plan)
        for key, replies in sc.replies.items():
            scripts.script(goal, key, *replies)
    _fake_server.reset()
    _fake_server.set_default(scripts)
    env = {**os.environ, "OPENAI_BASE_URL": _fake_server.base_url, "OPENAI_API_KEY": "sk-test-key",
           "PREFECT_API_URL": prefect_api_url}
    cli = Cli(env, tmp)
    try:
        # -- start all five; SIGKILL each group as it reaches its point ----------------------
        procs = {name: cli.start(r["goal"], "--run-key", r["run_key"], "--quiet") for name, r in runs.items()}

        def reached(name: str) -> bool:
            r = runs[name]
            nodes = {n.node_id: n.status for n in ledger.nodes(r["run_key"])}
            return SCENARIOS[name].kill_when(calls_by_goal(_fake_server, r["goal"]), nodes)

        def on_kill(name: str) -> None:
            runs[name]["killed_after"] = {k: len(v) for k, v in calls_by_goal(_fake_server, runs[name]["goal"]).items()}

        kill_each_at_its_point(cli, procs, reached, on_kill, timeout=150)
        for name, (proc, _, _) in procs.items():
            r = runs[name]
            r["group_left"] = group_alive(proc.pid)
            r["completed_at_kill"] = {n.node_id for n in ledger.nodes(r["run_key"]) if n.status == "completed"}
            r["versions_at_kill"] = [v.version for v in ledger.plan_versions(r["run_key"])]
            run = ledger.run(r["run_key"])
            r["status_at_kill"] = run.status if run else None

        # -- resume all five with the same run keys --------------------------------------------
        resumes = {name: cli.start(r["goal"], "--run-key", r["run_key"], "--quiet", "--report",
                                   str(tmp / f"{name}.json")) for name, r in runs.items()}
        for name, (proc, out, err) in resumes.items():
            code = proc.wait(timeout=180)
            r = runs[name]
            r["resume"] = CliResult(code, out.read_text(), err.read_text(), 0.0)
            report_path = tmp / f"{name}.json"
            r["report"] = json.loads(report_path.read_text()) if report_path.exists() else None
            r["calls"] = {k: len(v) for k, v in calls_by_goal(_fake_server, r["goal"]).items()}
            r["run"] = ledger.run(r["run_key"])
            r["nodes"] = {n.node_id: n for n in ledger.nodes(r["run_key"])}
            r["versions"] = [(v.version, v.action) for v in ledger.plan_versions(r["run_key"])]
            r["prefect_states"] = asyncio.run(_prefect_flow_run_states(r["run_key"]))
        yield runs
    finally:
        cli.close()
        ledger.close()
        _fake_server.reset()


NAMES = list(SCENARIOS)


@pytest.mark.parametrize("name", NAMES)
class TestKillAndResume:
    def test_the_kill_left_nothing_running(self, name, killed):
        r = killed[name]
        assert r["group_left"] == [], f"processes of the killed run still alive: {r['group_left']}"
        assert r["status_at_kill"] in (None, "running"), "a SIGKILLed run cannot have finished"

    def test_the_resume_gives_the_right_answer(self, name, killed):
        r = killed[name]
        resume = r["resume"]
        assert resume.returncode == 0, resume.stderr[-3000:]
        assert resume.stdout == SCENARIOS[name].answer + "\n"

    def test_no_completed_node_was_executed_again(self, name, killed):
        r = killed[name]
        for node in r["completed_at_kill"]:
            assert r["calls"][f"node:{node}"] == 1, f"{node} completed before the kill and ran again: {r['calls']}"
        for key, count in r["calls"].items():  # at most: what was in flight at the kill, once more
            assert count <= r["killed_after"].get(key, 0) + 1, (key, r["killed_after"], r["calls"])

    def test_ledger_report_and_prefect_agree(self, name, killed):
        r = killed[name]
        report, run, nodes = r["report"], r["run"], r["nodes"]
        assert report is not None, "no report written"
        assert (report["status"], report["answer"]) == (run.status, run.answer) == (
            "completed", SCENARIOS[name].answer)
        assert {t["id"]: (t["status"], t["result"], t["attempts"]) for t in report["tasks"]} == {
            k: (n.status, n.result, n.attempts) for k, n in nodes.items()}
        assert [v["version"] for v in report["plan_versions"]] == [v for v, _ in r["versions"]]
        for node_id, node in nodes.items():
            if node.status in ("completed", "cached"):
                assert node.result == f"result of node:{node_id}", node
        # Prefect: the resumed flow run completed; the killed one is not left Running.
        assert r["prefect_states"].count("COMPLETED") == 1, r["prefect_states"]
        assert "RUNNING" not in r["prefect_states"], r["prefect_states"]


class TestWhereTheKillsLanded:
    """Each kill hit the step it was meant for, and the resume did that step's work once more."""

    def test_planning(self, killed):
        r = killed["planning"]
        assert r["versions_at_kill"] == [] and r["completed_at_kill"] == set()
        assert r["calls"] == {"plan": 2, "node:a": 1, "node:b": 1, "node:c": 1}

    def test_a_node(self, killed):
        r = killed["a_node"]
        assert r["completed_at_kill"] == {"a"}
        assert r["calls"] == {"plan": 1, "node:a": 1, "node:b": 2, "node:c": 1}
        assert r["nodes"]["a"].status == "cached" and r["nodes"]["b"].status == "completed"

    def test_between_nodes(self, killed):
        r = killed["between_nodes"]
        assert "a" in r["completed_at_kill"] and "c" not in r["completed_at_kill"]
        assert r["calls"]["plan"] == 1 and r["calls"]["node:a"] == 1 and r["calls"]["node:c"] == 1

    def test_a_replan(self, killed):
        r = killed["a_replan"]
        assert r["versions_at_kill"] == [1], "killed before the replan was recorded"
        # b failed for good before the kill: the resume goes straight back to the replanner
        # (b is not tried again); the killed replan, unanswered, is asked again; nothing else repeats.
        assert r["calls"] == {"plan": 1, "node:a": 1, "node:b": 1, "replan": 2, "node:v2.1": 1, "node:c": 1}
        assert r["versions"] == [(1, None), (2, "retry_modified")]
        assert r["nodes"]["b"].status == "failed" and r["nodes"]["v2.1"].status == "completed"

    def test_synthesis(self, killed):
        r = killed["synthesis"]
        assert r["completed_at_kill"] == {"a", "b"}
        assert r["calls"] == {"plan": 1, "node:a": 1, "node:b": 1, "synthesis": 2}
        assert {n.status for n in r["nodes"].values()} == {"cached"}
