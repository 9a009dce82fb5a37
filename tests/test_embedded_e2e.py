"""The whole product, nothing faked: the CLI as a subprocess, no OPENAI_* variables (so the
bundled SmolLM2 model serves every call), real Prefect. ~1 min on a 2-core machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.processes import group_members

pytestmark = [pytest.mark.embedded, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600.0


def _live_group_members(pgid: int) -> list[str]:
    return [str(pid) for pid, _, _ in group_members(pgid)]


def _progress(home: Path) -> str:
    """Where a run got to, from its ledger and the embedded model's log (for a timeout message)."""
    from planner.ledger import Ledger

    lines = []
    db = home / "planflow.db"
    if db.exists():
        ledger = Ledger(f"sqlite:///{db}")
        for run in ledger.runs():
            lines.append(f"run {run.run_key}: {run.status}, plan v{run.plan_version}, {ledger.llm_totals(run.run_key)}")
            lines += [f"  {n.node_id}: {n.status} (attempts {n.attempts})" for n in ledger.nodes(run.run_key)]
        ledger.close()
    else:
        lines.append("no ledger yet")
    log = home / "embedded-model.log"
    if log.exists():
        lines.append("embedded-model.log (tail):\n" + log.read_text(errors="replace")[-1500:])
    return "\n".join(lines)


def test_cli_on_the_embedded_model(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.pop("PLANFLOW_MODEL", None)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # its own temporary Prefect server database
    env["PLANFLOW_HOME"] = str(tmp_path / "planflow")  # its own ledger and model log, kept for a post-mortem
    # A fresh PREFECT_HOME takes ~20 s to migrate (Prefect's default start-up timeout: 20 s).
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    report_path = tmp_path / "report.json"
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, str(ROOT / "flows" / "run.py"), "Write a haiku about autumn",
               "--fresh", "--report", str(report_path), "--max-parallel", "2"]

    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=str(tmp_path), start_new_session=True)
    try:
        try:
            returncode = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the CLI did not finish within {TIMEOUT:.0f} s (load average {os.getloadavg()}):\n"
                        f"{_progress(tmp_path / 'planflow')}\nstderr:\n{err_path.read_text(errors='replace')[-3000:]}")
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 10
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftover = _live_group_members(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)

    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    assert returncode == 0, stderr[-3000:]
    assert stdout.strip(), "no answer on stdout"
    assert leftover == [], f"processes (the embedded model? Prefect's server?) outlived the CLI: {leftover}"
    print(f"embedded e2e run: {seconds:.1f} s; answer: {stdout.strip()[:200]!r}")

    report = json.loads(report_path.read_text())
    assert report["status"] == "completed"
    assert report["answer"] and report["answer"].strip() == stdout.strip()
    from planner.answers import is_clean_answer

    assert is_clean_answer(report["answer"]), f"prompt scaffolding in the answer: {report['answer']!r}"
    plan_tasks = report["plan_versions"][0]["tasks"]
    assert 1 <= len(plan_tasks) <= 7, plan_tasks
    assert report["tasks"], "the report lists no tasks"
    for task in report["tasks"]:
        assert task["status"] == "completed", task
        assert task["result"], task
    assert report["llm"]["calls"] >= len(plan_tasks) + 1  # the plan, then every task
    assert report["llm"]["prompt_tokens"] > 0 and report["llm"]["completion_tokens"] > 0
