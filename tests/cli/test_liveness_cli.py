"""A run SIGKILLed by a parent that resumes it at once, before reaping it (a supervisor,
a script, a container whose init does not reap): the zombie must not hold the run key."""

from __future__ import annotations

import time

import psutil
import pytest
from support.fake_openai import Reply

pytestmark = pytest.mark.slow

GOAL = "Outlive a zombie"


def test_an_unreaped_killed_owner_is_resumed_at_once(cli, fake_llm, plan_answer, run_key, cli_ledger):
    fake_llm.script("plan", plan_answer(("a", [])))
    fake_llm.script("node:a", Reply(content="too late", delay=60), Reply(content="result of a"))
    args = ("--run-key", run_key, "--quiet")

    proc, _, first_err = cli.start(GOAL, *args)
    try:
        deadline = time.monotonic() + 120
        while not fake_llm.calls_for("node:a"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"node a never started (exit {proc.poll()}):\n{first_err.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        cli.kill_group(proc.pid)  # SIGKILL, and no wait(): the CLI stays a zombie of ours
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed CLI never became a zombie"
            time.sleep(0.01)
        assert cli_ledger.run(run_key).status == "running"

        result = cli.run(GOAL, *args)

        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, "reaped too early: the test proved nothing"
    finally:
        cli.kill_group(proc.pid)
        proc.wait(timeout=10)  # reap it now
    assert "already running" not in result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "result of a\n"
    assert cli_ledger.run(run_key).status == "completed"
