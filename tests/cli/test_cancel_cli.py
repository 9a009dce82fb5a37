"""Cancelling a run through the real CLI: Ctrl-C, `planflow runs cancel KEY` from a second
process, and `prefect flow-run cancel ID` (what the UI's Cancel button does: the flow run is
set Cancelling on the run's Prefect API). Each ends with the ledger saying `cancelled` (who,
when), the node in flight `cancelled` and the finished one kept, then a resume that
completes without paying for the finished node again.

Node b's first model call hangs (the fake server answers nothing until the client goes
away), so b is in flight when the cancel comes; its second call (the resume) answers.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fake_openai import Reply

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

DAG = [("a", []), ("b", ["a"]), ("c", ["b"])]
GOAL = "Cancel me halfway"
WAIT = 120.0


def _start_with_b_in_flight(cli, fake_llm, plan_answer, run_key, ledger, *extra: str):
    """Start the CLI; return (proc, stderr path) once a finished and b's model call is in flight."""
    fake_llm.script("plan", plan_answer(*DAG))
    fake_llm.script("node:a", "result of a")
    fake_llm.script("node:b", Reply(hang=True), "result of b")
    fake_llm.script("node:c", "result of c")
    proc, _, err = cli.start(GOAL, "--run-key", run_key, "--quiet", *extra)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        statuses = {n.node_id: n.status for n in ledger.nodes(run_key)}
        if statuses.get("a") == "completed" and statuses.get("b") == "running" and fake_llm.calls_for("node:b"):
            return proc, err
        if proc.poll() is not None:
            pytest.fail(f"the CLI ended early (exit {proc.returncode}):\n{err.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    cli.kill_group(proc.pid)
    pytest.fail(f"b was not in flight within {WAIT:.0f} s:\n{err.read_text(errors='replace')[-3000:]}")


def _wait_exit(cli, proc: subprocess.Popen, err: Path) -> int:
    try:
        return proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the CLI did not stop after the cancel:\n{err.read_text(errors='replace')[-3000:]}")
    finally:
        cli.kill_group(proc.pid)


def _assert_cancelled(ledger, run_key: str, by: str) -> None:
    run = ledger.run(run_key)
    assert run.status == "cancelled"
    assert run.cancelled_by == by
    assert run.cancelled_at is not None and run.finished_at is not None
    nodes = {n.node_id: n for n in ledger.nodes(run_key)}
    assert nodes["a"].status == "completed" and nodes["a"].result == "result of a"  # kept
    assert nodes["b"].status == "cancelled"  # it was running
    assert nodes["c"].status == "pending"  # never started


def _flow_run_states(prefect_home: Path, flow_run_id: str) -> tuple[str, dict[str, str]]:
    """The flow run's state and its task runs' (by name), read from the CLI's Prefect database."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        (flow_state,) = db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
        tasks = dict(db.execute("SELECT name, state_type FROM task_run WHERE flow_run_id = ?", (flow_run_id,)))
    return flow_state, tasks


def _resume_pays_only_the_rest(cli, fake_llm, run_key: str, tmp_path: Path) -> None:
    report_path = tmp_path / "resumed.json"
    result = cli.run("runs", "resume", run_key, "--quiet", "--report", str(report_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "result of c\n"
    assert len(fake_llm.calls_for("plan")) == 1, "the plan was made again"
    assert len(fake_llm.calls_for("node:a")) == 1, "finished node a was paid for twice"
    assert len(fake_llm.calls_for("node:b")) == 2  # the abandoned call, then the resume's
    assert len(fake_llm.calls_for("node:c")) == 1
    report = json.loads(report_path.read_text())
    assert report["status"] == "completed" and report["cancelled_by"] is None
    assert {t["id"]: t["status"] for t in report["tasks"]} == {"a": "cached", "b": "completed", "c": "completed"}


def test_ctrl_c_cancels_then_resume_completes(cli, fake_llm, plan_answer, run_key, cli_ledger, tmp_path):
    report_path = tmp_path / "cancelled.json"
    proc, err = _start_with_b_in_flight(cli, fake_llm, plan_answer, run_key, cli_ledger, "--report", str(report_path))
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    code = _wait_exit(cli, proc, err)

    stderr = err.read_text(errors="replace")
    errors = [line for line in stderr.splitlines() if line.startswith("planflow: error:")]
    assert code == 130, stderr[-3000:]
    assert errors == [
        f"planflow: error: run {run_key} cancelled by ctrl-c; the work done so far is kept: "
        f"resume with planflow runs resume {run_key}"
    ], stderr[-3000:]
    assert "Traceback" not in stderr
    _assert_cancelled(cli_ledger, run_key, "ctrl-c")
    b_call = fake_llm.calls_for("node:b")[0]
    assert b_call.finished and b_call.status == 0, "b's model call was not abandoned"
    report = json.loads(report_path.read_text())
    assert report["status"] == "cancelled" and report["cancelled_by"] == "ctrl-c" and report["cancelled_at"]
    assert {t["id"]: t["status"] for t in report["tasks"]} == {"a": "completed", "b": "cancelled", "c": "skipped"}

    _resume_pays_only_the_rest(cli, fake_llm, run_key, tmp_path)


def test_runs_cancel_from_another_process(cli, fake_llm, plan_answer, run_key, cli_ledger, tmp_path, cli_prefect_home):
    proc, err = _start_with_b_in_flight(cli, fake_llm, plan_answer, run_key, cli_ledger)
    try:
        cancel = cli.run("runs", "cancel", run_key)
    finally:
        code = _wait_exit(cli, proc, err)

    user = getpass.getuser()
    assert cancel.returncode == 0, cancel.stderr[-3000:]
    assert cancel.stdout.startswith(f"run {run_key} cancelled by {user} (flow run "), cancel.stdout
    assert cancel.stdout.rstrip().endswith(f"resume with planflow runs resume {run_key}")
    assert len(cancel.stdout.splitlines()) == 1
    stderr = err.read_text(errors="replace")
    assert code == 130, stderr[-3000:]
    assert f"planflow: error: run {run_key} cancelled by {user};" in stderr
    _assert_cancelled(cli_ledger, run_key, user)
    flow_state, tasks = _flow_run_states(cli_prefect_home, cli_ledger.run(run_key).flow_run_id)
    assert flow_state == "CANCELLED"
    assert {name.split(":")[0]: state for name, state in tasks.items() if ":" in name} == {
        "a": "COMPLETED", "b": "CANCELLED"
    }

    _resume_pays_only_the_rest(cli, fake_llm, run_key, tmp_path)


def test_prefect_flow_run_cancel(cli, fake_llm, plan_answer, run_key, cli_ledger, tmp_path, cli_prefect_home):
    """`prefect flow-run cancel ID` against the run's API, as a person with the UI would."""
    proc, err = _start_with_b_in_flight(cli, fake_llm, plan_answer, run_key, cli_ledger)
    run = cli_ledger.run(run_key)
    assert run.prefect_api_url and run.flow_run_id
    env = dict(cli.env, PREFECT_API_URL=run.prefect_api_url)
    try:
        prefect = subprocess.run(
            [sys.executable, "-m", "prefect", "flow-run", "cancel", run.flow_run_id],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=WAIT,
        )
    finally:
        code = _wait_exit(cli, proc, err)
    assert prefect.returncode == 0, prefect.stdout + prefect.stderr
    stderr = err.read_text(errors="replace")
    assert code == 130, stderr[-3000:]
    assert f"planflow: error: run {run_key} cancelled by prefect;" in stderr
    _assert_cancelled(cli_ledger, run_key, "prefect")
    assert _flow_run_states(cli_prefect_home, run.flow_run_id)[0] == "CANCELLED"

    _resume_pays_only_the_rest(cli, fake_llm, run_key, tmp_path)


def test_runs_cancel_signals_the_process_when_its_api_is_gone(cli, fake_llm, plan_answer, run_key, cli_ledger, tmp_path):
    proc, err = _start_with_b_in_flight(cli, fake_llm, plan_answer, run_key, cli_ledger)
    with cli_ledger.engine.begin() as conn:  # as if the run's Prefect server had gone away
        conn.exec_driver_sql("UPDATE runs SET prefect_api_url = 'http://127.0.0.1:9/api' WHERE run_key = ?", (run_key,))
    try:
        cancel = cli.run("runs", "cancel", run_key)
    finally:
        code = _wait_exit(cli, proc, err)
    user = getpass.getuser()
    assert cancel.returncode == 0, cancel.stderr[-3000:]
    assert "sent SIGINT to its process" in cancel.stdout
    assert code == 130
    _assert_cancelled(cli_ledger, run_key, user)

    _resume_pays_only_the_rest(cli, fake_llm, run_key, tmp_path)


def test_cancel_a_run_that_is_not_running(cli, fake_llm, plan_answer, run_key, cli_ledger):
    fake_llm.script("plan", plan_answer(("a", [])))
    assert cli.run(GOAL, "--run-key", run_key, "--quiet").returncode == 0

    finished = cli.run("runs", "cancel", run_key)
    assert finished.returncode == 2
    assert finished.error_lines == [f"planflow: error: run {run_key} is not running (it is completed); nothing to cancel"]
    unknown = cli.run("runs", "cancel", "no-such-run")
    assert unknown.returncode == 2
    assert unknown.error_lines == ["planflow: error: no run 'no-such-run' in the ledger (see: planflow runs list)"]
    assert cli_ledger.run(run_key).status == "completed"
