"""The CLI end to end: a real `python flows/run.py` subprocess, real Prefect (temporary
server), and the fake OpenAI server. Runs that reach Prefect cost ~10 s each, so
each such test makes exactly one run and checks everything it can on it."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from support.fake_openai import Reply

REPORT_TASK_KEYS = {
    "id", "description", "depends_on", "status", "attempts", "cached",
    "started_at", "finished_at", "result", "error",
}


def _iso(value: str | None) -> datetime:
    assert isinstance(value, str) and value, f"not a timestamp: {value!r}"
    return datetime.fromisoformat(value)


def _assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


class TestBadInput:
    """Exit 2 before Prefect starts: one error line, no traceback."""

    CASES = {
        "empty_goal": ("   ", None, ["the goal is empty"]),
        "plan_not_json": ("goal", "this is { not json", ["not valid JSON"]),
        "plan_cycle": (
            "goal",
            {"tasks": [{"id": "a", "description": "A", "depends_on": ["b"]},
                       {"id": "b", "description": "B", "depends_on": ["a"]}]},
            ["a -> b -> a"],
        ),
        "plan_unknown_dep": (
            "goal",
            {"tasks": [{"id": "first", "description": "A", "depends_on": []},
                       {"id": "second", "description": "B", "depends_on": ["ghost"]}]},
            ["'second'", "'ghost'"],
        ),
        "plan_duplicate_id": (
            "goal",
            {"tasks": [{"id": "dup", "description": "A", "depends_on": []},
                       {"id": "dup", "description": "B", "depends_on": []}]},
            ["duplicate task id 'dup'"],
        ),
        "plan_missing_file": ("goal", "MISSING", ["cannot read plan file", "does-not-exist.json"]),
    }

    @pytest.mark.parametrize("case", list(CASES))
    def test_bad_input_exits_2_with_one_error_line(self, case, cli, tmp_path, fake_llm):
        goal, plan, expected = self.CASES[case]
        args: list[str] = []
        if plan == "MISSING":
            args = ["--plan", str(tmp_path / "does-not-exist.json")]
        elif isinstance(plan, str):
            (tmp_path / "plan.json").write_text(plan)
            args = ["--plan", str(tmp_path / "plan.json")]
        elif plan is not None:
            (tmp_path / "plan.json").write_text(json.dumps(plan))
            args = ["--plan", str(tmp_path / "plan.json")]

        result = cli.run(goal, *args, timeout=60)

        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected exactly one stderr line, got:\n{result.stderr}"
        assert lines[0].startswith("planflow: error:"), lines[0]
        for fragment in expected:
            assert fragment in lines[0], (fragment, lines[0])
        assert result.stdout == ""
        _assert_no_traceback(result)
        assert fake_llm.calls == [], "bad input must fail before any model call"
        assert result.seconds < 30, "bad input should fail fast, before Prefect starts"
        assert result.leftover == []


class TestInfrastructureFailure:
    def test_prefect_not_starting_is_one_error_line(self, cli_factory, fake_llm, write_plan, tmp_path):
        plan_path, _ = write_plan([("a", [])])
        # A fresh PREFECT_HOME needs ~20 s of migrations: a 1 s start-up timeout cannot be met.
        cli = cli_factory(tmp_path / "fresh-prefect-home", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")

        result = cli.run("goal", "--plan", str(plan_path), "--quiet", timeout=90)

        assert result.leftover == [], f"processes left running after the CLI exited: {result.leftover}"
        assert result.returncode == 3, result.stderr[-2000:]  # a service is unavailable
        assert fake_llm.calls == []
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("planflow: error:"), result.stderr[-2000:]
        assert "Prefect" in lines[0]


class TestHelp:
    def test_help_mentions_every_option_and_the_environment(self, cli):
        result = cli.run("--help", timeout=60)
        assert result.returncode == 0, result.stderr
        for option in ("--plan", "--run-key", "--fresh", "--model", "--max-parallel",
                       "--max-retries", "--report", "--quiet"):
            assert option in result.stdout, option
        for env_var in ("OPENAI_BASE_URL", "PLANFLOW_HOME"):
            assert env_var in result.stdout, env_var
        assert result.stderr == ""


class TestSuccessfulRun:
    def test_plan_run_prints_answer_and_writes_report(self, cli, fake_llm, write_plan, run_key, tmp_path):
        plan_path, plan = write_plan([("a", []), ("b", ["a"]), ("c", ["a"])])
        fake_llm.script("synthesis", "The synthesised answer: 42.")
        report_path = tmp_path / "out" / "report.json"

        result = cli.run(
            "Answer the question", "--plan", str(plan_path), "--run-key", run_key,
            "--report", str(report_path), "--quiet", "--max-parallel", "2",
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout == "The synthesised answer: 42.\n"
        _assert_no_traceback(result)
        # --quiet: no live table, no summary line.
        assert "depends on" not in result.stderr and "│" not in result.stderr
        assert "model calls" not in result.stderr
        assert "planflow: error:" not in result.stderr
        assert result.leftover == [], f"processes left running after the CLI exited: {result.leftover}"

        # The server saw exactly the plan's nodes and one synthesis (no plan call: --plan).
        keys = sorted(c.key for c in fake_llm.calls)
        assert keys == ["node:a", "node:b", "node:c", "synthesis"]

        report = json.loads(report_path.read_text())
        assert report["run_key"] == run_key
        assert isinstance(report["flow_run_id"], str) and re.fullmatch(r"[0-9a-f-]{36}", report["flow_run_id"])
        assert report["status"] == "completed"
        assert report["answer"] == "The synthesised answer: 42."
        assert report["plan_versions"][0]["tasks"] == plan["tasks"]
        tasks = {t["id"]: t for t in report["tasks"]}
        assert list(tasks) == ["a", "b", "c"]
        for task_id, task in tasks.items():
            assert REPORT_TASK_KEYS <= set(task), REPORT_TASK_KEYS - set(task)
            assert task["description"] == f"do {task_id}"
            assert task["depends_on"] == ([] if task_id == "a" else ["a"])
            assert task["status"] == "completed"
            assert task["attempts"] == 1
            assert task["cached"] is False
            assert task["result"] == f"result of node:{task_id}"
            assert task["error"] is None
            assert _iso(task["started_at"]) <= _iso(task["finished_at"])
        assert _iso(tasks["a"]["finished_at"]) <= _iso(tasks["b"]["started_at"])
        assert report["llm"]["calls"] == len(fake_llm.calls) == 4
        assert report["llm"]["prompt_tokens"] > 0 and report["llm"]["completion_tokens"] > 0


ERROR_LINE = re.compile(r"planflow: error: [^\n]*")


class TestFailedRun:
    def test_exits_1_with_one_error_naming_the_node(self, failed_run):
        result = failed_run["result"]
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        errors = ERROR_LINE.findall(result.stderr)
        assert len(errors) == 1, result.stderr
        assert "'b'" in errors[0] and "HTTP 400" in errors[0], errors[0]
        assert "unsupported parameter" in errors[0]
        assert failed_run["run_key"] in errors[0], "the error should say how to resume"
        assert result.leftover == [], f"processes left running after the CLI exited: {result.leftover}"

    def test_error_is_a_line_of_its_own_and_the_last_one(self, failed_run):
        result = failed_run["result"]
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("planflow: error:"), result.stderr[-500:]
        assert len(result.error_lines) == 1

    def test_no_traceback_or_prefect_logs_on_stderr(self, failed_run):
        stderr = failed_run["result"].stderr
        assert "Traceback" not in stderr, stderr
        assert "| ERROR   |" not in stderr, stderr

    def test_live_view_is_drawn_when_not_quiet(self, failed_run):
        stderr = failed_run["result"].stderr
        assert "depends on" in stderr and "failed" in stderr

    def test_a_400_is_not_retried_and_dependents_never_run(self, failed_run):
        keys = [c.key for c in failed_run["calls"]]
        assert keys.count("node:b") == 1, keys
        assert "node:c" not in keys
        assert sorted(keys) == ["node:a", "node:b", "node:x"]

    def test_report_records_the_failure_and_keeps_finished_work(self, failed_run):
        report = failed_run["report"]
        assert report is not None, "no report was written for a failed run"
        assert report["run_key"] == failed_run["run_key"]
        assert report["status"] == "failed"
        assert report["answer"] is None
        assert "HTTP 400" in (report["error"] or "")
        tasks = {t["id"]: t for t in report["tasks"]}
        assert {k: v["status"] for k, v in tasks.items()} == {
            "a": "completed", "b": "failed", "c": "skipped", "x": "completed",
        }
        assert "HTTP 400" in tasks["b"]["error"] and "unsupported parameter" in tasks["b"]["error"]
        assert tasks["b"]["result"] is None and tasks["b"]["attempts"] == 1
        assert tasks["a"]["result"] == "result of node:a"
        assert tasks["x"]["result"] == "result of node:x"
        assert report["llm"]["calls"] == len(failed_run["calls"]) == 3


class TestSecrets:
    SECRET = "sk-SECRET-MARKER-42"

    def test_api_key_echoed_by_the_server_is_never_written_anywhere(
        self, cli, fake_llm, write_plan, run_key, tmp_path, planflow_home, cli_prefect_home
    ):
        plan_path, _ = write_plan([("a", []), ("b", ["a"])])
        fake_llm.script(
            "node:b",
            Reply(status=400, error_message=f"Incorrect API key provided: {self.SECRET}. Bearer {self.SECRET}"),
        )
        env = {**cli.env, "OPENAI_API_KEY": self.SECRET, "PLANFLOW_REPLAN_ON_FAILURE": "false"}
        report_path = tmp_path / "report.json"

        result = cli.run(
            "Keep my key secret", "--plan", str(plan_path), "--run-key", run_key,
            "--report", str(report_path), env=env,
        )

        assert result.returncode == 1, result.stderr
        # The key really went to the server, and the server really echoed it back.
        (call,) = fake_llm.calls_for("node:b")
        headers = {k.lower(): v for k, v in call.headers.items()}
        assert headers.get("authorization") == f"Bearer {self.SECRET}"
        assert len(ERROR_LINE.findall(result.stderr)) == 1 and "HTTP 400" in result.stderr

        marker = self.SECRET.encode()
        assert marker not in result.stdout.encode()
        assert marker not in result.stderr.encode()
        assert report_path.exists()
        assert marker not in report_path.read_bytes()
        db = planflow_home / "planflow.db"
        assert db.exists()
        for path in (db, db.with_name("planflow.db-wal"), db.with_name("planflow.db-shm")):
            if path.exists():
                assert marker not in path.read_bytes(), f"API key found in {path}"
        # Nor in anything else Planflow or Prefect keeps on disk (ledger, logs, Prefect's DB, results).
        leaks = [p for root in (planflow_home, cli_prefect_home) for p in root.rglob("*")
                 if p.is_file() and marker in p.read_bytes()]
        assert leaks == [], f"API key found in {leaks}"
        # What went wrong is still recorded, redacted.
        report = json.loads(report_path.read_text())
        node_b = next(t for t in report["tasks"] if t["id"] == "b")
        assert "HTTP 400" in node_b["error"] and "[redacted]" in node_b["error"]
