"""Tool calls made visible: the report's `tool_calls` and `steps` per task (from a real
SQLite ledger) and `planflow runs show`'s one line per call (in-process, no Prefect)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli.runs import runs_main
from planner.ledger import Ledger
from planner.models import Plan, Task
from planner.report import TOOL_RESULT_CHARS, build_report

RUN = "tools-report-run"
PLAN = Plan(
    tasks=(
        Task(id="fetch", description="Fetch the figures", tools=("calculator",)),
        Task(id="notify", description="Notify the team", depends_on=("fetch",)),
        Task(id="plain", description="Say hello"),
        Task(id="later", description="Never started", depends_on=("notify",)),
    )
)


def record_run(ledger: Ledger) -> None:
    ledger.start_run(RUN, "Tell the team the figures", flow_run_id="fr-1", model="fake-model")
    ledger.record_plan_version(RUN, 1, PLAN, (), reason="initial plan")
    ledger.node_attempt_started(RUN, "fetch")
    ledger.tool_call_started(RUN, "fetch", 1, 0, tool="calculator", arguments='{"expression": "2*21"}', idempotent=True)
    ledger.tool_call_finished(RUN, "fetch", 1, 0, result="42", error=None)
    ledger.tool_call_started(RUN, "fetch", 2, 0, tool="read_file", arguments='{"path": "a.txt"}', idempotent=True)
    ledger.tool_call_finished(RUN, "fetch", 2, 0, result="x" * (TOOL_RESULT_CHARS + 500), error=None)
    ledger.tool_call_started(RUN, "fetch", 2, 1, tool="read_file", arguments='{"path": "../b"}', idempotent=True)
    ledger.tool_call_finished(RUN, "fetch", 2, 1, result=None, error="path '../b' leaves the workspace")
    ledger.tool_call_replayed(RUN, "fetch", 1, 0)
    ledger.node_completed(RUN, "fetch", result="42 and a file", prompt_tokens=30, completion_tokens=9, cached=False)
    ledger.node_attempt_started(RUN, "notify")
    ledger.tool_call_started(
        RUN, "notify", 1, 0, tool="send_notice", arguments='{"team": "ops", "text": "[bold]42[/]"}', idempotent=False
    )
    ledger.node_failed(RUN, "notify", "`send_notice(team='ops')` may or may not have happened")
    ledger.node_attempt_started(RUN, "plain")
    ledger.node_completed(RUN, "plain", result="hello", prompt_tokens=5, completion_tokens=1, cached=False)
    ledger.finish_run(RUN, status="failed", error="task 'notify' failed")


@pytest.fixture
def report(ledger: Ledger) -> dict:
    record_run(ledger)
    return build_report(ledger, RUN)


def by_id(report: dict) -> dict[str, dict]:
    return {t["id"]: t for t in report["tasks"]}


class TestReport:
    def test_tool_calls_per_task_in_order(self, report: dict) -> None:
        fetch = by_id(report)["fetch"]
        assert [(c["step"], c["index"], c["tool"]) for c in fetch["tool_calls"]] == [
            (1, 0, "calculator"), (2, 0, "read_file"), (2, 1, "read_file"),
        ]
        first = fetch["tool_calls"][0]
        assert {"step", "tool", "arguments", "result", "error", "started_at", "finished_at", "cached"} <= set(first)
        assert (first["arguments"], first["result"], first["error"], first["cached"]) == (
            '{"expression": "2*21"}', "42", None, True,
        )
        assert first["started_at"] <= first["finished_at"]
        assert fetch["tool_calls"][2]["error"] == "path '../b' leaves the workspace"
        json.dumps(report)

    def test_results_capped(self, report: dict) -> None:
        result = by_id(report)["fetch"]["tool_calls"][1]["result"]
        assert result.startswith("x" * TOOL_RESULT_CHARS) and result.endswith("[... 500 more characters cut]")

    def test_steps(self, report: dict) -> None:
        tasks = by_id(report)
        # completed after tool calls at steps 1 and 2: answered at step 3
        assert tasks["fetch"]["steps"] == 3
        # failed inside its step 1 call; completed without tools: one turn; never started: none
        assert (tasks["notify"]["steps"], tasks["plain"]["steps"], tasks["later"]["steps"]) == (1, 1, 0)
        assert tasks["plain"]["tool_calls"] == [] and tasks["later"]["tool_calls"] == []

    def test_unfinished_call_has_no_end(self, report: dict) -> None:
        [call] = by_id(report)["notify"]["tool_calls"]
        assert (call["tool"], call["finished_at"], call["result"], call["idempotent"]) == (
            "send_notice", None, None, False,
        )

    def test_plan_versions_keep_task_tools(self, report: dict) -> None:
        tasks = report["plan_versions"][0]["tasks"]
        assert tasks[0]["tools"] == ["calculator"] and "tools" not in tasks[1]


class TestRunsShow:
    def test_lists_each_tool_call_on_one_line(
        self, clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        clean_env.setenv("PLANFLOW_HOME", str(tmp_path / "home"))
        clean_env.setenv("COLUMNS", "200")
        from planner.settings import PlanflowSettings

        ledger = Ledger(PlanflowSettings().ledger_url)
        try:
            record_run(ledger)
        finally:
            ledger.close()
        assert runs_main(["show", RUN]) == 0
        out = capsys.readouterr().out
        lines = [line.strip() for line in out.splitlines()]
        assert "step 1  calculator(expression='2*21')  ok  cached" in " ".join(lines)
        assert "fetch  step 2  read_file(path='a.txt')  ok" in lines
        assert "fetch  step 2  read_file(path='../b')  error: path '../b' leaves the workspace" in lines
        notice = next(line for line in lines if "step 1  send_notice" in line)
        assert notice.startswith("notify  step 1  send_notice(team='ops', text='[bold]42[/]')")
        assert notice.endswith("did not finish (may or may not have happened)")
        assert "tool calls" in out
