"""Helpers of the deployment tests (tests/deployments): start and stop real processes
(a Prefect server by the project's own script, workers, flow runs), poll the API.

Everything started here is stopped by its starter: the server by its script (which
signals only the process group it started), other processes by their process group
and their descendants, found by parent pid in /proc.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
RUN_PY = REPO_ROOT / "flows" / "run.py"
TEST_OUTPUT = REPO_ROOT / "test-output"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RETRYABLE_STATUS = {429, 502, 503}


# -- small helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The session's environment (its isolated PLANFLOW_HOME, fast retries), minus any
    endpoint or Prefect API setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "PREFECT_API_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO",
        PREFECT=PREFECT,  # the scripts under deployments/ and scripts/ use this prefect
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (children first found by parent pid in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def flow_run_processes(flow_run_id: str) -> list[int]:
    """Pids of the processes executing a flow run: a worker or serve.py starts each run in a
    process of its own whose environment names it (PREFECT__FLOW_RUN_ID)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def sigkill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def flow_run_id_of(output: str) -> str:
    """The flow run id that `prefect deployment run` (or submit_run.sh) printed."""
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return match.group(1)


@dataclass
class Background:
    """A long-running process we started in its own session (worker, server, serve.py)."""

    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL it, its process group and every descendant (a flow run it started
        may sit in a session of its own). A worker ignores its first SIGTERM, so no
        polite round: the tests have waited for what they need already."""
        pids = descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass


def start_background(name: str, cmd: list[str], env: Mapping[str, str], log_dir: Path, cwd: Path = REPO_ROOT) -> Background:
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=dict(env), cwd=str(cwd), start_new_session=True,
        )
    return Background(name, proc, log)


def run_cmd(cmd: list[str], env: Mapping[str, str], timeout: float = 120, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a short command to completion in its own session; kill its group on timeout."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(env), cwd=str(cwd), start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish within {timeout:.0f}s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing it started outlives it
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# -- a Prefect server started by scripts/prefect_server.sh ----------------------------------


@dataclass
class PrefectServer:
    home: Path
    port: int
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=30)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, retried on 429/502/503 as Prefect's own client does: a busy
        SQLite-backed server answers 503 ("database is locked") and expects a retry."""
        deadline = time.monotonic() + 60
        delay = 0.5
        with self.client() as c:
            while True:
                r = c.request(method, path, **kwargs)
                if r.status_code not in RETRYABLE_STATUS or time.monotonic() > deadline:
                    r.raise_for_status()
                    return r
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/flow_runs/{flow_run_id}").json()

    def flow_runs(self, **flow_run_filter: Any) -> list[dict[str, Any]]:
        return self.request("POST", "/flow_runs/filter", json={"flow_runs": flow_run_filter}).json()

    def flow_run_named(self, name: str) -> dict[str, Any] | None:
        runs = self.flow_runs(name={"any_": [name]})
        return runs[0] if runs else None

    def events(self, name: str, resource_id: str | None = None, related_id: str | None = None) -> list[dict[str, Any]]:
        """Events of one name about one resource (e.g. a flow run's heartbeats) or naming
        it as a related resource (e.g. a worker's events about a flow run), newest first."""
        query: dict[str, Any] = {"event": {"name": [name]}}
        if resource_id:
            query["resource"] = {"id": [resource_id]}
        if related_id:
            query["related"] = {"id": [related_id]}
        return self.request("POST", "/events/filter", json={"filter": query, "limit": 50}).json()["events"]

    def run_deployment(self, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """What `prefect deployment run NAME -p ...` does, without a CLI process: a
        scheduled flow run of the deployment, for a worker to take."""
        deployment = self.request("GET", f"/deployments/name/{name}").json()
        # The idempotency key makes a retried create (after a 503) return the same run.
        body = {"parameters": parameters, "idempotency_key": uuid.uuid4().hex}
        return self.request("POST", f"/deployments/{deployment['id']}/create_flow_run", json=body).json()

    def automations_named(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.request("POST", "/automations/filter", json={}).json() if a["name"] == name]

    def wait_final(self, flow_run_id: str, timeout: float, log: Callable[[], str] = lambda: "") -> dict[str, Any]:
        """Poll the API until the flow run is in a final state; return the run."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(flow_run_id)
            if run["state_type"] in FINAL_STATES:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {flow_run_id} still {run['state_type']} after {timeout:.0f}s\n{log()}")
            time.sleep(0.5)


def start_prefect_server(home: Path, **extra_env: str) -> PrefectServer:
    """Start a server with the project's script; its own PREFECT_HOME and a free port."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = subprocess_env(PREFECT_HOME=str(home), PREFECT_SERVER_PORT=str(port), STARTUP_TIMEOUT="150", **extra_env)
    server = PrefectServer(home, port, env)
    started = run_cmd([str(REPO_ROOT / "scripts" / "prefect_server.sh"), "start"], env, timeout=180)
    if started.returncode != 0:
        stop_prefect_server(server)
        log = (home / "server.log").read_text(errors="replace")[-3000:] if (home / "server.log").exists() else ""
        pytest.fail(f"scripts/prefect_server.sh start failed ({started.returncode}):\n{started.stderr}\n{log}")
    assert started.stdout.strip() == server.api, started.stdout
    return server


def stop_prefect_server(server: PrefectServer) -> None:
    pidfile = server.home / "server.pid"
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    pids = descendants(pid) if pid else []
    run_cmd([str(REPO_ROOT / "scripts" / "prefect_server.sh"), "stop"], server.env, timeout=60)
    for leftover in pids + ([pid] if pid else []):  # belt and braces: only what it started
        try:
            os.kill(leftover, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- the deployments' stack: pool, deployments, a worker, serve.py ---------------------------

DEPLOYMENTS = REPO_ROOT / "deployments"
DAILY = "plan-and-execute/daily-brief"
ON_EVENT = "plan-and-execute/on-goal-submitted"
SERVED = "plan-and-execute/test-serve"  # deployments/serve.py --name test-serve
ZOMBIE_AFTER = 45
"""The zombie automation's window in the tests (deployments/zombies.yaml: 90 s); above
the runs' 30 s heartbeat (Prefect's minimum) with room for a late one."""
IN_FLIGHT = 600.0
"""Seconds a model call the tests kill mid-way takes: longer than any test waits (the
stack's runs get a model timeout above it, so the call is still in flight at the kill)."""


@dataclass
class Stack:
    env: dict[str, str]  # for commands: PREFECT_API_URL, no model endpoint
    runner_env: dict[str, str]  # of the worker and serve.py, so of their flow runs
    deployments: dict[str, dict[str, Any]]  # "flow/name" -> deployment, from the API
    worker: Background  # deployments/worker.sh on the planflow pool (replaced if a test kills it)
    serve: Background  # deployments/serve.py: no pool, no worker
    log_dir: Path

    def logs(self) -> str:
        return f"--- worker ---\n{self.worker.tail()}\n--- serve.py ---\n{self.serve.tail()}"

    @property
    def worker_prefect_home(self) -> str:
        """Where the worker's flow runs keep their task results (what a resume replays)."""
        return self.runner_env["PREFECT_HOME"]



def start_worker(name: str, env: Mapping[str, str], log_dir: Path) -> Background:
    """deployments/worker.sh in the background (see `worker_started`)."""
    return start_background(name, [str(DEPLOYMENTS / "worker.sh"), "--name", name], env, log_dir)


def worker_started(worker: Background) -> bool:
    assert worker.alive(), f"the worker exited:\n{worker.tail()}"
    return "started" in worker.tail()


# -- one flow run against the server, shared by the artifact and UI tests ------------------

PLAN = {
    "tasks": [
        {"id": "gather", "description": "Gather the facts about Lisbon's neighbourhoods", "depends_on": []},
        {"id": "budget", "description": "Estimate a daily budget", "depends_on": []},
        {"id": "draft", "description": "Draft a day-by-day itinerary", "depends_on": ["gather", "budget"]},
        {"id": "review", "description": "Review the itinerary for travel times", "depends_on": ["draft"]},
        {"id": "tips", "description": "List packing tips", "depends_on": []},
    ]
}
ANSWER = "Day 1: Alfama. Day 2: Belém. Day 3: Sintra. (synthesised answer)"


@dataclass
class CompletedRun:
    run_key: str
    goal: str
    flow_run: dict[str, Any]
    answer: str
    stdout: str
    stderr: str
    seconds: float
