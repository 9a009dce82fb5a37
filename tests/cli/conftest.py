"""Helpers for running the real CLI (`flows/run.py`) as a subprocess.

Every run starts in its own session (so its process group holds the CLI, Prefect's
temporary API server and, if any, the embedded model), writes stdout/stderr to
files (an orphaned grandchild holding a pipe open can never wedge a test), and is
killed as a whole group afterwards, whatever happened.

CLI subprocesses share one PREFECT_HOME of their own (not the session's), so
Prefect's temporary server in a CLI run never shares a SQLite database with the
one an in-process flow test may have running in the pytest process. The
crash/resume tests rely on it being the same for both runs of a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.flows import route
from support.processes import group_members, kill_group
from support.fake_openai import Reply

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_PY = REPO_ROOT / "flows" / "run.py"
CLI_TIMEOUT = 240.0  # generous: the machine may be loaded by other work


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    pgid: int
    seconds: float
    leftover: list[tuple[int, str, str]]  # processes of its group still alive after it exited

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("planflow: error:")]


def wait_group_gone(pgid: int, timeout: float = 10.0) -> list[tuple[int, str, str]]:
    """Wait until no live process is left in group `pgid`; return what is left (empty = gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = group_members(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class CliRunner:
    group_members = staticmethod(group_members)
    wait_group_gone = staticmethod(wait_group_gone)
    kill_group = staticmethod(kill_group)

    def __init__(self, env: Mapping[str, str], out_dir: Path) -> None:
        self.env = dict(env)
        self.out_dir = out_dir
        self._n = 0

    def command(self, goal: str, *args: str) -> list[str]:
        return [sys.executable, str(RUN_PY), goal, *args]

    def start(self, goal: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen, Path, Path]:
        """Start the CLI; the caller must kill its group (`kill_group(proc.pid)`) when done."""
        self._n += 1
        out, err = self.out_dir / f"cli-{self._n}.stdout", self.out_dir / f"cli-{self._n}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                self.command(goal, *args),
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                env=dict(env if env is not None else self.env),
                cwd=str(self.out_dir),
                start_new_session=True,
            )
        return proc, out, err

    def run(
        self, goal: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = CLI_TIMEOUT
    ) -> CliResult:
        started = time.monotonic()
        proc, out, err = self.start(goal, *args, env=env)
        try:
            try:
                returncode = proc.wait(timeout=timeout)
                seconds = time.monotonic() - started
                leftover = wait_group_gone(proc.pid, timeout=5.0)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.wait(timeout=10)
                pytest.fail(
                    f"CLI did not finish within {timeout:.0f}s: {self.command(goal, *args)}\n"
                    f"stderr:\n{err.read_text(errors='replace')[-3000:]}"
                )
        finally:
            kill_group(proc.pid)
            if proc.poll() is None:
                proc.wait(timeout=10)
        return CliResult(
            returncode,
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
            proc.pid,
            seconds,
            leftover,
        )


@pytest.fixture(scope="session")
def cli_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-prefect-home")


def cli_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """os.environ (the session's isolated PLANFLOW_HOME, fast retries, ...) for a CLI run."""
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(prefect_home)
    env.pop("PREFECT_API_URL", None)
    # A fresh PREFECT_HOME's database is migrated first (20-23 s here; Prefect's default
    # start-up timeout is 20 s). run.py and tests/conftest.py raise it too; this keeps the CLI
    # tests safe on their own. TestInfrastructureFailure covers a start-up that does time out.
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env.update(extra)
    return env


@pytest.fixture
def cli(fake_llm, cli_prefect_home: Path, tmp_path: Path) -> CliRunner:
    """Runs the CLI against the fake OpenAI server (its env vars are set by `fake_llm`)."""
    assert os.environ.get("OPENAI_BASE_URL") == fake_llm.base_url
    return CliRunner(cli_env(cli_prefect_home), tmp_path)


@pytest.fixture
def cli_factory(fake_llm, cli_prefect_home: Path, tmp_path: Path):
    """A CliRunner with its own env tweaks: make(prefect_home=None, **env)."""

    def make(prefect_home: Path | None = None, **extra: str) -> CliRunner:
        return CliRunner(cli_env(prefect_home or cli_prefect_home, **extra), tmp_path)

    return make


@pytest.fixture
def run_key() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def write_plan(tmp_path: Path):
    def write(tasks: list[tuple[str, list[str]]] | str, name: str = "plan.json") -> tuple[Path, dict[str, Any]]:
        path = tmp_path / name
        if isinstance(tasks, str):
            path.write_text(tasks)
            return path, {}
        plan = {"tasks": [{"id": i, "description": f"do {i}", "depends_on": deps} for i, deps in tasks]}
        path.write_text(json.dumps(plan))
        return path, plan

    return write


@pytest.fixture
def cli_ledger():
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    led = Ledger(PlanflowSettings().ledger_url)
    yield led
    led.close()


@pytest.fixture
def planflow_home() -> Path:
    from planner.settings import PlanflowSettings

    return PlanflowSettings().home


def plan_json(*tasks: tuple[str, list[str]]) -> str:
    return json.dumps({"tasks": [{"id": i, "description": f"do {i}", "depends_on": deps} for i, deps in tasks]})


@pytest.fixture
def plan_answer():
    """A model's plan answer: ("a", []), ("b", ["a"]) -> '{"tasks": [...]}'."""
    return plan_json


route_of = route  # the session's routing: 'plan', 'node:<id>', 'replan', 'synthesis'


@pytest.fixture(scope="class")
def failed_run(_fake_server, cli_prefect_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CLI run (not --quiet) in which node b gets an HTTP 400; replanning off, so it fails.

    Class-scoped: the ~15 s run is made once and several tests look at it. It does
    not use `fake_llm` (function-scoped); it resets the shared server itself and
    keeps a snapshot of the calls.
    """
    tmp = tmp_path_factory.mktemp("failed-run")
    server = _fake_server
    server.reset()
    server.set_default(lambda body: f"result of {route_of(body)}")
    server.script("node:b", Reply(status=400, error_message="unsupported parameter: temperature"))
    plan = {"tasks": [{"id": i, "description": f"do {i}", "depends_on": d}
                      for i, d in [("a", []), ("b", ["a"]), ("c", ["b"]), ("x", [])]]}
    (tmp / "plan.json").write_text(json.dumps(plan))
    run_key = f"cli-failed-{uuid.uuid4().hex[:8]}"
    env = cli_env(
        cli_prefect_home,
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="sk-test-key",
        PLANFLOW_REPLAN_ON_FAILURE="false",
    )
    try:
        result = CliRunner(env, tmp).run(
            "A doomed goal", "--plan", str(tmp / "plan.json"), "--run-key", run_key,
            "--report", str(tmp / "report.json"), "--max-retries", "3",
        )
        calls = server.calls
    finally:
        server.reset()
    report_path = tmp / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return {"result": result, "calls": calls, "report": report, "run_key": run_key}
