"""Crash and resume through the real CLI: SIGKILL the whole process group mid-run,
then re-run with the same --run-key. Finished work must be replayed, not re-paid."""

from __future__ import annotations

import json
import time

import pytest
from support.fake_openai import Reply

pytestmark = pytest.mark.slow

# A small DAG: a -> (b, c) -> d -> e -> f. One sink, so its result is the answer.
DAG = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]), ("e", ["d"]), ("f", ["e"])]
NODE_DELAY = 1.0
GOAL = "Survive a crash"


def test_sigkill_mid_run_then_resume_replays_finished_nodes(
    cli, fake_llm, plan_answer, run_key, cli_ledger, tmp_path
):
    fake_llm.script("plan", plan_answer(*DAG))
    for node, _ in DAG:
        fake_llm.script(f"node:{node}", Reply(content=f"result of {node}", delay=NODE_DELAY))
    args = ("--run-key", run_key, "--max-parallel", "2", "--quiet")

    # -- first run: kill it (all of it) once two nodes are done ------------------------
    proc, _, first_err = cli.start(GOAL, *args)
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 120
        completed: set[str] = set()
        while time.monotonic() < deadline:
            completed = {n.node_id for n in cli_ledger.nodes(run_key) if n.status == "completed"}
            if len(completed) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"the CLI ended before it was killed (exit {proc.returncode}):\n"
                            f"{first_err.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        else:
            pytest.fail(f"fewer than 2 nodes completed within 120 s:\n{first_err.read_text(errors='replace')[-3000:]}")
        cli.kill_group(pgid)
        proc.wait(timeout=10)
        # Nodes that completed in the ledger before the kill (re-read: one may have landed
        # between the poll and the kill; those count as finished too).
        completed = {n.node_id for n in cli_ledger.nodes(run_key) if n.status == "completed"}
    finally:
        cli.kill_group(pgid)
        if proc.poll() is None:
            proc.wait(timeout=10)

    assert 2 <= len(completed) < len(DAG), completed
    assert completed <= {"a", "b", "c", "d", "e"}
    left = cli.wait_group_gone(pgid, timeout=10)
    assert left == [], f"processes of the killed run still alive: {left}"
    assert cli_ledger.run(run_key).status == "running", "a SIGKILLed run cannot have finished"
    calls_at_kill = {node: len(fake_llm.calls_for(f"node:{node}")) for node, _ in DAG}
    assert all(calls_at_kill[n] == 1 for n in completed)

    # -- second run, same key: resumes ------------------------------------------------
    report_path = tmp_path / "report.json"
    result = cli.run(GOAL, *args, "--report", str(report_path))

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "result of f\n"
    assert result.leftover == [], f"processes left running after the CLI exited: {result.leftover}"

    # Finished nodes were paid for exactly once, over both runs; so was the plan.
    for node in sorted(completed):
        assert len(fake_llm.calls_for(f"node:{node}")) == 1, f"node {node} was executed again after the resume"
    assert len(fake_llm.calls_for("plan")) == 1, "the plan was made again after the resume"
    # Everything else ran (again, if it was in flight at the kill) and the run finished.
    for node, _ in DAG:
        assert len(fake_llm.calls_for(f"node:{node}")) >= 1
    assert fake_llm.calls_for("synthesis") == []  # one sink: its result is the answer

    report = json.loads(report_path.read_text())
    assert report["run_key"] == run_key
    assert report["status"] == "completed"
    assert report["answer"] == "result of f"
    assert [t["id"] for t in report["plan_versions"][0]["tasks"]] == [n for n, _ in DAG]
    tasks = {t["id"]: t for t in report["tasks"]}
    assert set(tasks) == {n for n, _ in DAG}
    for node, task in tasks.items():
        assert task["status"] in ("completed", "cached"), (node, task)
        assert task["result"] == f"result of {node}"
    for node in completed:
        assert tasks[node]["status"] == "cached" and tasks[node]["cached"] is True, tasks[node]
        assert tasks[node]["attempts"] == 1, tasks[node]
    for node in set(tasks) - completed:
        # Run by the resume; or (a narrow race) finished by the killed run a moment before the
        # kill but not yet written to the ledger: then it is replayed, still paid for once.
        if tasks[node]["cached"]:
            assert len(fake_llm.calls_for(f"node:{node}")) == 1, tasks[node]
        else:
            assert tasks[node]["status"] == "completed", tasks[node]
