"""Kill a run whose nodes use tools (issue 11): SIGKILL the CLI's whole process group at a
tool step, resume with the same --run-key, and check that every side effect happened at
most once (counted by the tools themselves, in a file) and no model turn was paid twice
(counted on the fake model server).

Two runs side by side, each killed as it reaches its point, then both resumed side by
side (four CLI runs in the time of about two):

- "steps": node x called `send_notice` (not idempotent) and is killed while its next
  model turn is in flight; node y, at the same moment, is inside `fetch_report`
  (idempotent, takes an `idempotency_key`). The resume must replay x's call and first
  turn from Prefect's cache, re-run y's call with the same key, and finish.
- "side_effect": node a is killed inside `charge` (not idempotent). The resume must not
  charge again: the node fails naming the call, and the replanner (scripted to skip it)
  lets the run finish.
"""

from __future__ import annotations

import collections
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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
from support.fake_openai import Reply, ToolCall, tool_results

from planner.cache_keys import idempotency_key

pytestmark = pytest.mark.slow

TOOLS = Path(__file__).resolve().parents[1] / "support" / "tool_modules" / "fault_tools.py"
LONG = 90.0  # a reply held this long is "in flight" until the kill
KILL_DEADLINE = 150.0
RESUME_TIMEOUT = 180.0


def _calls(*calls: ToolCall) -> Reply:
    return Reply(tool_calls=list(calls))


@dataclass
class Scenario:
    plan: str
    replies: dict[str, list[Any]]
    kill_when: Callable[[Any, str, dict[str, list[Any]], list[dict]], bool]  # (ledger, run key, calls, tool log)
    answer: str


def _in_flight(calls: dict[str, list[Any]], key: str) -> bool:
    return any(c.status == 0 for c in calls.get(key, []))


def _started_not_finished(ledger: Any, run_key: str, node: str) -> bool:
    row = ledger.tool_call(run_key, node, 1, 0)
    return row is not None and row.finished_at is None


def _steps_killable(ledger: Any, run_key: str, calls: dict[str, list[Any]], log: list[dict]) -> bool:
    x_call = ledger.tool_call(run_key, "x", 1, 0)
    return (
        x_call is not None and x_call.finished_at is not None and _in_flight(calls, "node:x")
        and _started_not_finished(ledger, run_key, "y") and any(e["tool"] == "fetch_report" for e in log)
    )


def _side_effect_killable(ledger: Any, run_key: str, calls: dict[str, list[Any]], log: list[dict]) -> bool:
    return _started_not_finished(ledger, run_key, "a") and any(e["tool"] == "charge" for e in log)


SCENARIOS = {
    "steps": Scenario(
        plan_answer(("x", []), ("y", []), ("z", ["x", "y"])),
        {
            "node:x": [_calls(ToolCall("send_notice", {"team": "ops"})),
                       Reply(content="notice done", delay=LONG), "notice done"],
            "node:y": [_calls(ToolCall("fetch_report", {"name": "q3"})), "report read"],
        },
        _steps_killable,
        "result of node:z",
    ),
    "side_effect": Scenario(
        plan_answer(("a", []), ("b", ["a"])),
        {
            "node:a": [_calls(ToolCall("charge", {"amount": 5})), "charged"],
            "replan": [decision("skip", "the charge may have gone through: do not repeat it")],
        },
        _side_effect_killable,
        "result of node:b",
    ),
}


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def killed(_fake_server, prefect_api_url, tmp_path_factory) -> Iterator[dict[str, dict[str, Any]]]:
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    tmp = tmp_path_factory.mktemp("kill-tools")
    ledger = Ledger(PlanflowSettings().ledger_url)
    scripts = GoalScripts()
    tag = uuid.uuid4().hex[:6]
    runs = {
        name: {"goal": f"Kill a tool step: {name} {tag}", "run_key": f"kill-tools-{name}-{tag}",
               "log": tmp / f"{name}-tools.jsonl"}
        for name in SCENARIOS
    }
    for name, sc in SCENARIOS.items():
        goal = runs[name]["goal"]
        scripts.script(goal, "plan", sc.plan)
        for key, replies in sc.replies.items():
            scripts.script(goal, key, *replies)
    _fake_server.reset()
    _fake_server.set_default(scripts)
    env = {**os.environ, "OPENAI_BASE_URL": _fake_server.base_url, "OPENAI_API_KEY": "sk-test-key",
           "PREFECT_API_URL": prefect_api_url}
    cli = Cli(env, tmp)

    def start(name: str) -> tuple[Any, Path, Path]:
        r = runs[name]
        return cli.start(r["goal"], "--run-key", r["run_key"], "--quiet", "--tools", str(TOOLS),
                         env={"FAULT_TOOL_LOG": str(r["log"])})

    try:
        # -- start both; SIGKILL each group as it reaches its point -------------------------------
        procs = {name: start(name) for name in runs}

        def reached(name: str) -> bool:
            r = runs[name]
            return SCENARIOS[name].kill_when(ledger, r["run_key"], calls_by_goal(_fake_server, r["goal"]), _log(r["log"]))

        def on_kill(name: str) -> None:
            r = runs[name]
            r["killed_after"] = {k: len(v) for k, v in calls_by_goal(_fake_server, r["goal"]).items()}
            r["log_at_kill"] = _log(r["log"])
            r["tool_calls_at_kill"] = ledger.tool_calls(r["run_key"])

        kill_each_at_its_point(cli, procs, reached, on_kill, timeout=KILL_DEADLINE, interval=0.01)
        for name, (proc, _, _) in procs.items():
            r = runs[name]
            r["group_left"] = group_alive(proc.pid)
            run = ledger.run(r["run_key"])
            r["status_at_kill"] = run.status if run else None

        # -- resume both with the same run keys ---------------------------------------------------
        resumes = {name: start(name) for name in runs}
        for name, (proc, out, err) in resumes.items():
            try:
                code = proc.wait(timeout=RESUME_TIMEOUT)
            except Exception:
                cli.kill(proc)
                pytest.fail(f"{name}: the resume did not finish:\n{err.read_text()[-3000:]}")
            r = runs[name]
            r["resume"] = CliResult(code, out.read_text(), err.read_text(), 0.0)
            r["calls"] = calls_by_goal(_fake_server, r["goal"])
            r["log"] = _log(r["log"])
            r["run"] = ledger.run(r["run_key"])
            r["nodes"] = {n.node_id: n for n in ledger.nodes(r["run_key"])}
            r["tool_calls"] = {(t.node_id, t.step, t.call_index): t for t in ledger.tool_calls(r["run_key"])}
            r["versions"] = [(v.version, v.action) for v in ledger.plan_versions(r["run_key"])]
        yield runs
    finally:
        cli.close()
        ledger.close()
        _fake_server.reset()


def _turns(calls: list[Any]) -> collections.Counter:
    """How many requests of one node were made at each step (step = tool results seen + 1)."""
    return collections.Counter(len(tool_results(c.body)) + 1 for c in calls)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_kill_left_nothing_and_the_resume_completes(name, killed):
    r = killed[name]
    assert r["group_left"] == [], f"processes of the killed run still alive: {r['group_left']}"
    assert r["status_at_kill"] == "running", "a SIGKILLed run cannot have finished"
    resume = r["resume"]
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert resume.stdout == SCENARIOS[name].answer + "\n"
    assert (r["run"].status, r["run"].answer) == ("completed", SCENARIOS[name].answer)


class TestKilledDuringTheTurnAfterACall:
    """x: `send_notice` finished, the next model turn was in flight at the kill."""

    def test_the_tool_ran_once(self, killed):
        r = killed["steps"]
        assert [e for e in r["log"] if e["tool"] == "send_notice"] == [{"tool": "send_notice", "team": "ops"}]

    def test_the_earlier_turn_was_not_paid_again(self, killed):
        r = killed["steps"]
        # step 1 asked once (before the kill); step 2 in flight at the kill and asked once more
        assert _turns(r["calls"]["node:x"]) == {1: 1, 2: 2}, r["calls"]["node:x"]
        assert r["killed_after"]["node:x"] == 2

    def test_the_call_was_replayed_from_the_cache(self, killed):
        r = killed["steps"]
        call = r["tool_calls"][("x", 1, 0)]
        assert (call.tool, call.result, call.cached) == ("send_notice", "notice sent to ops", True)
        # the resumed turn was shown the same result under the same call id
        resumed = r["calls"]["node:x"][-1]
        assert list(tool_results(resumed.body).values()) == ["notice sent to ops"]
        assert resumed.body["messages"] == r["calls"]["node:x"][1].body["messages"]
        assert r["nodes"]["x"].status == "completed" and r["nodes"]["x"].result == "notice done"


class TestKilledInsideAnIdempotentCall:
    """y: killed inside `fetch_report`, which is safe to repeat."""

    def test_it_was_run_again_and_the_run_went_on(self, killed):
        r = killed["steps"]
        assert [e["tool"] for e in r["log_at_kill"]].count("fetch_report") == 1
        assert [e["tool"] for e in r["log"]].count("fetch_report") == 2
        call = r["tool_calls"][("y", 1, 0)]
        assert call.finished_at is not None and call.result == "report q3: all good" and call.idempotent
        assert _turns(r["calls"]["node:y"]) == {1: 1, 2: 1}
        assert r["nodes"]["y"].result == "report read"

    def test_the_idempotency_key_survived_the_crash(self, killed):
        r = killed["steps"]
        keys = [e["key"] for e in r["log"] if e["tool"] == "fetch_report"]
        assert len(keys) == 2 and keys[0] == keys[1], keys
        assert keys[0] == idempotency_key(run_key=r["run_key"], node_id="y", step=1, index=0)


class TestKilledInsideASideEffect:
    """a: killed inside `charge`, which is not safe to repeat."""

    def test_it_was_not_run_again(self, killed):
        r = killed["side_effect"]
        assert [e["tool"] for e in r["log"]] == ["charge"], r["log"]
        row = r["tool_calls"][("a", 1, 0)]
        assert row.finished_at is None and not row.idempotent  # it may or may not have happened

    def test_the_node_failed_naming_the_call(self, killed):
        r = killed["side_effect"]
        node = r["nodes"]["a"]
        assert node.status == "failed", node
        assert "charge(amount=5)" in node.error and "may or may not have happened" in node.error, node.error
        assert _turns(r["calls"]["node:a"]) == {1: 1}, "the first turn was paid again"

    def test_the_replanner_was_told_and_the_run_went_on(self, killed):
        r = killed["side_effect"]
        (replan,) = r["calls"]["replan"]
        prompt = replan.body["messages"][-1]["content"]
        assert "charge(amount=5)" in prompt and "may or may not have happened" in prompt, prompt
        assert r["versions"] == [(1, None), (2, "skip")]
        assert r["nodes"]["b"].status == "completed"
