"""Pauses answered from the terminal: a run paused for a person in one CLI process,
answered by `planflow runs approve|edit|abort|hint KEY` from another.

Each test makes one paused run (real `flows/run.py`, Prefect's temporary server,
the fake model server) and answers it through that run's own Prefect API, as a
person at a second terminal would.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from pathlib import Path

import pytest
from support.fake_openai import Reply

PAUSE_TIMEOUT = 180.0


@pytest.fixture
def paused_cli(cli_factory, tmp_path):
    """Start a CLI run that will pause; yields start(*args) -> (proc, stderr path); kills what it started."""
    started: list[subprocess.Popen] = []
    runner = cli_factory(PLANFLOW_PAUSE_POLL_SECONDS="1", PLANFLOW_PAUSE_TIMEOUT="240")
    runner.out_dir = tmp_path / "paused"  # its output files apart from those of the answering commands
    runner.out_dir.mkdir()

    def start(*args: str) -> tuple[subprocess.Popen, Path]:
        proc, _out, err = runner.start("A goal a person reviews", *args)
        started.append(proc)
        return proc, err

    yield start
    for proc in started:
        runner.kill_group(proc.pid)
        if proc.poll() is None:
            proc.wait(timeout=10)


def wait_for_notice(proc: subprocess.Popen, stderr: Path, text: str) -> str:
    """The CLI's stderr once it tells the pause (it contains `text`)."""
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while time.monotonic() < deadline:
        seen = stderr.read_text(errors="replace")
        if text in seen:
            return seen
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before it paused:\n{seen[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"the run never told its pause:\n{stderr.read_text(errors='replace')[-3000:]}")


def finished(proc: subprocess.Popen, stderr: Path) -> int:
    try:
        return proc.wait(timeout=PAUSE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not go on after the answer:\n{stderr.read_text(errors='replace')[-3000:]}")


def one_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(f in result.error_lines[0] for f in fragments), result.error_lines[0]
    return result.error_lines[0]


def test_approve_from_another_terminal_after_a_rejected_edit(cli, paused_cli, write_plan, run_key, cli_ledger, tmp_path):
    plan, _ = write_plan([("a", []), ("b", ["a"])])
    proc, stderr = paused_cli("--plan", str(plan), "--run-key", run_key, "--approve-plan")
    notice = wait_for_notice(proc, stderr, f"planflow runs approve {run_key}")
    # Told once, with every command that answers an approval (and none that does not).
    assert notice.count("is paused for a person: approve plan v1 (2 tasks)") == 1, notice
    assert f"planflow runs edit {run_key} plan.json" in notice and f"planflow runs abort {run_key} --reason TEXT" in notice
    assert "planflow runs hint" not in notice
    assert "Prefect UI" not in notice  # the temporary server has no UI

    one_error(cli.run("runs", "hint", run_key, "be brief"), "waits for a person to approve plan v1", "'hint' does not answer")
    bad, _ = write_plan('{"tasks": [{"id": "x", "description": "X", "depends_on": ["ghost"]}]}', name="bad.json")
    one_error(cli.run("runs", "edit", run_key, str(bad)), "bad.json", "'ghost'", "still paused")
    assert cli_ledger.open_pause(run_key) is not None  # nothing was sent: it still waits

    approved = cli.run("runs", "approve", run_key)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip().splitlines() == [
        f"approved plan v1 of run {run_key} (decided by {getpass.getuser()}); the run takes it up at its next check"
    ]
    assert finished(proc, stderr) == 0
    assert stderr.read_text().count(f"planflow runs approve {run_key}") == 1  # told once, not on every refresh

    shown = cli.run("runs", "show", run_key, "--json")
    (decision,) = json.loads(shown.stdout)["decisions"]
    assert decision["kind"] == "approval" and decision["action"] == "approve" and decision["plan_version"] == 1
    assert decision["decided_by"] == getpass.getuser() and decision["decided_at"] >= decision["asked_at"]
    (record,) = cli_ledger.decisions(run_key)
    assert (record.action, record.decided_by, record.pause_key) == ("approve", getpass.getuser(), "approve-plan-v1")
    assert f"approve by {getpass.getuser()}" in cli.run("runs", "show", run_key).stdout

    one_error(cli.run("runs", "approve", run_key), f"run {run_key} is not paused: it completed")


def test_edit_runs_the_edited_plan(cli, paused_cli, fake_llm, write_plan, run_key, cli_ledger, tmp_path):
    plan, _ = write_plan([("a", []), ("b", ["a"])])
    proc, stderr = paused_cli("--plan", str(plan), "--run-key", run_key, "--approve-plan")
    wait_for_notice(proc, stderr, f"planflow runs approve {run_key}")
    edited, _ = write_plan(json.dumps({"tasks": [
        {"id": "a", "description": "do a", "depends_on": []},
        {"id": "poem", "description": "write the edited haiku", "depends_on": ["a"]},
    ]}), name="edited.json")

    sent = cli.run("runs", "edit", run_key, str(edited))
    assert sent.returncode == 0 and "sent an edited plan (2 tasks)" in sent.stdout, sent.stderr
    assert finished(proc, stderr) == 0
    assert {c.key for c in fake_llm.calls} == {"node:a", "node:poem"}
    (poem,) = fake_llm.calls_for("node:poem")
    assert "write the edited haiku" in json.dumps(poem.body["messages"])
    assert [(v.version, v.action) for v in cli_ledger.plan_versions(run_key)] == [(1, None), (2, "edited")]
    (decision,) = cli_ledger.decisions(run_key)
    assert (decision.action, decision.detail) == ("edit", "added poem; removed b")


def test_abort_with_a_reason_fails_the_run_and_says_who_and_why(cli, paused_cli, write_plan, run_key, tmp_path):
    plan, _ = write_plan([("a", [])])
    report = tmp_path / "report.json"
    # --quiet draws no live view, but a pause is still told: the run waits on the reader.
    proc, stderr = paused_cli("--plan", str(plan), "--run-key", run_key, "--approve-plan", "--report", str(report), "--quiet")
    wait_for_notice(proc, stderr, f"planflow runs abort {run_key} --reason TEXT")

    aborted = cli.run("runs", "abort", run_key, "--reason", "wrong goal")
    assert aborted.returncode == 0, aborted.stderr
    assert finished(proc, stderr) == 1
    assert "aborted by a person before any task ran: wrong goal" in stderr.read_text()
    written = json.loads(report.read_text())
    assert written["status"] == "failed" and "wrong goal" in written["error"]
    (decision,) = written["decisions"]
    assert (decision["action"], decision["detail"], decision["decided_by"]) == ("abort", "wrong goal", getpass.getuser())
    assert [t["status"] for t in written["tasks"]] == ["skipped"]


def test_a_hint_when_no_replan_is_left_retries_the_failed_task(cli, paused_cli, fake_llm, write_plan, run_key, cli_ledger):
    fake_llm.script("node:b", Reply(status=400, error_message="context too long"))
    fake_llm.script("replan", json.dumps({"action": "retry_modified", "reason": "hinted",
                                          "tasks": [{"id": "b", "description": "do b briefly", "depends_on": ["a"]}]}))
    plan, _ = write_plan([("a", []), ("b", ["a"])])
    proc, stderr = paused_cli("--plan", str(plan), "--run-key", run_key, "--max-replans", "0", "--on-exhausted", "ask")
    notice = wait_for_notice(proc, stderr, f"planflow runs hint {run_key} TEXT")
    assert "is paused for a person: task 'b' failed and no replan is left" in notice and "context too long" in notice
    assert "planflow runs approve" not in notice
    one_error(cli.run("runs", "approve", run_key), "task 'b' failed", "'approve' does not answer")

    hinted = cli.run("runs", "hint", run_key, "keep it under 50 words")
    assert hinted.returncode == 0, hinted.stderr
    assert finished(proc, stderr) == 0
    (replan,) = fake_llm.calls_for("replan")
    assert "keep it under 50 words" in replan.body["messages"][-1]["content"]
    assert [n.node_id for n in cli_ledger.nodes(run_key) if n.status == "completed"] == ["a", "v2.1"]
    (decision,) = cli_ledger.decisions(run_key)
    assert (decision.kind, decision.node_id, decision.action) == ("failure", "b", "replan")
    assert decision.detail == "keep it under 50 words"


def test_the_notice_links_the_flow_run_when_the_api_is_a_server():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli.runs_answer import pause_notice
    from planner.ledger import DecisionRecord, RunRecord

    run = RunRecord(run_key="my run", goal="g", flow_run_id="2b81d8e1-82b5-44a2-9fdc-ece54bff270b")
    pause = DecisionRecord(run_key="my run", kind="failure", pause_key="failure-b-v1", plan_version=1,
                           node_id="b", question="task 'b' failed and no replan is left: boom")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        notice = pause_notice(run, pause)
    assert "answer in the Prefect UI: http://127.0.0.1:4200/runs/flow-run/2b81d8e1-82b5-44a2-9fdc-ece54bff270b" in notice
    assert "planflow runs hint 'my run' TEXT" in notice  # the key as a shell needs it
