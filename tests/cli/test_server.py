"""`planflow server start|stop|status` and runs that reuse the local Prefect server, end to end:
real subprocesses, a real `prefect server start` with its own PLANFLOW_HOME and a free port.

The suite's default is PLANFLOW_SERVER=temporary (tests/conftest.py); these tests opt in
with PLANFLOW_SERVER=local, and the class fixture stops the server whatever happens.
One server start (a fresh database: 20-50 s) serves the whole class.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from support.processes import group_members, kill_group

RUN_PY = Path(__file__).resolve().parents[2] / "flows" / "run.py"

LINK = re.compile(r"^Prefect UI: (http://127\.0\.0\.1:(\d+)/v2/runs/flow-run/([0-9a-f-]{36})\?tab=Artifacts)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def planflow(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python flows/run.py ARGS` in its own session; whatever it leaves in its group is killed."""
    proc = subprocess.Popen([sys.executable, str(RUN_PY), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=str(RUN_PY.parents[1]))
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(prefect_home), **extra)
    return env


def get(url: str, accept: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="class")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment with a PLANFLOW_HOME and a port of its own, the local server opted in;
    at the end the server is stopped (and its group killed if stopping failed)."""
    home = tmp_path_factory.mktemp("server-home")
    env = cli_env(home / "prefect-of-the-cli", PLANFLOW_HOME=str(home), PLANFLOW_SERVER="local",
                  PLANFLOW_SERVER_PORT=str(free_port()))
    yield env
    record = home / "server.json"
    pid = json.loads(record.read_text())["pid"] if record.exists() else None
    planflow(env, "server", "stop", timeout=60)
    if pid is not None:
        kill_group(pid)


@pytest.mark.usefixtures("fake_llm")
class TestLocalServer:
    """In order: start, status, a run that reuses it, its link, `runs show`, stop; then a run
    that finds no server starts it (its database migrated by then: a quick start)."""

    state: dict = {}

    def test_start_records_the_server_and_status_says_up(self, server_env):
        home = Path(server_env["PLANFLOW_HOME"])
        started = planflow(server_env, "server", "start")
        assert started.returncode == 0, started.stderr
        record = json.loads((home / "server.json").read_text())
        assert record["port"] == int(server_env["PLANFLOW_SERVER_PORT"])
        assert Path(record["database"]).is_relative_to(home) and Path(record["database"]).exists()
        assert os.getpgid(record["pid"]) == record["pid"], "the server runs in a session of its own"
        assert get(f"http://127.0.0.1:{record['port']}/api/health")[0] == 200

        again = planflow(server_env, "server", "start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert json.loads((home / "server.json").read_text())["pid"] == record["pid"], "one server, not two"

        status = planflow(server_env, "server", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        for fragment in ("up at http://127.0.0.1:", f"pid {record['pid']}", "uptime", record["database"]):
            assert fragment in status.stdout, (fragment, status.stdout)
        TestLocalServer.state["record"] = record

    def test_a_run_reuses_it_and_stays_viewable_after_the_cli_exits(self, server_env, cli_factory, tmp_path):
        record = self.state["record"]
        home = Path(server_env["PLANFLOW_HOME"])
        run_key = f"srv-{uuid.uuid4().hex[:8]}"
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"tasks": [{"id": "a", "description": "do a", "depends_on": []}]}))
        runner = cli_factory(Path(server_env["PREFECT_HOME"]), PLANFLOW_HOME=str(home), PLANFLOW_SERVER="local")
        result = runner.run("Say hello", "--plan", str(plan), "--run-key", run_key)

        assert result.returncode == 0, result.stderr[-3000:]
        assert result.leftover == [], "the CLI's own group is gone (the server is not in it)"
        assert "started a local Prefect server" not in result.stderr, "it was running: reused, not started"
        links = LINK.findall(result.stderr)
        assert len(links) == 2, f"a link at start and at the end:\n{result.stderr[-3000:]}"
        (first, port, flow_run_id), (last, _, _) = links
        assert first == last and int(port) == record["port"]
        assert result.stderr.index(first) < result.stderr.index("depends on"), "the first link comes before the work"

        # After the CLI exited: the flow run is on the local server, with its plan artifact, and the page opens.
        status, body = get(f"http://127.0.0.1:{record['port']}/api/flow_runs/{flow_run_id}")
        assert status == 200 and json.loads(body)["state"]["type"] == "COMPLETED"
        from planner.ledger import Ledger

        ledger = Ledger(f"sqlite:///{home / 'planflow.db'}")
        run = ledger.run(run_key)
        ledger.close()
        assert run.flow_run_id == flow_run_id and run.prefect_api_url.rstrip("/") == f"http://127.0.0.1:{record['port']}/api"
        status, page = get(first, accept="text/html")
        assert status == 200 and b"<html" in page.lower()
        assert alive(record["pid"])
        TestLocalServer.state.update(run_key=run_key, link=first)

    def test_runs_show_prints_the_link(self, server_env):
        shown = planflow(server_env, "runs", "show", self.state["run_key"])
        assert shown.returncode == 0, shown.stderr
        assert f"Prefect UI: {self.state['link']}" in shown.stdout

    def test_stop_leaves_no_process_and_the_link_is_said_gone(self, server_env):
        pid = self.state["record"]["pid"]
        stopped = planflow(server_env, "server", "stop", timeout=60)
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
        deadline = time.monotonic() + 10
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_members(pid) == [], "nothing of the server's group is left"
        assert not (Path(server_env["PLANFLOW_HOME"]) / "server.json").exists()

        status = planflow(server_env, "server", "status")
        assert status.returncode == 3 and status.stdout.startswith("down")
        shown = planflow(server_env, "runs", "show", self.state["run_key"])
        assert "not viewable now" in shown.stdout and "planflow server start" in shown.stdout


    def test_a_run_with_no_server_starts_it_and_says_how_to_stop_it(self, server_env, cli_factory, tmp_path):
        home = Path(server_env["PLANFLOW_HOME"])
        assert not (home / "server.json").exists()
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"tasks": [{"id": "a", "description": "do a", "depends_on": []}]}))
        runner = cli_factory(Path(server_env["PREFECT_HOME"]), PLANFLOW_HOME=str(home), PLANFLOW_SERVER="local",
                             PLANFLOW_SERVER_PORT=server_env["PLANFLOW_SERVER_PORT"])
        result = runner.run("Say hello again", "--plan", str(plan), "--quiet")

        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "result of node:a"
        # --quiet: only the answer, and the one line that says what keeps running and how to stop it.
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "started a local Prefect server" in lines[0], result.stderr[-2000:]
        assert "planflow server stop" in lines[0]
        pid = json.loads((home / "server.json").read_text())["pid"]
        assert str(pid) in lines[0] and alive(pid), "the server outlives the run"
        assert result.leftover == []
        assert planflow(server_env, "server", "status").returncode == 0


class TestWithoutAServer:
    """Cases that start nothing: a stale record, a taken port."""

    def test_a_stale_record_is_removed_and_never_signalled(self, tmp_path):
        home = tmp_path / "home"
        home.mkdir()
        env = cli_env(tmp_path / "prefect", PLANFLOW_HOME=str(home), PLANFLOW_SERVER_PORT=str(free_port()))
        # A live process that is not the server (this pytest process: the pid is reused, its start
        # time differs), then a pid that no longer exists.
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        try:
            for pid in (bystander.pid, 2**22 + 17):
                (home / "server.json").write_text(json.dumps({
                    "pid": pid, "port": 9, "owner": f"{socket.gethostname()}:{pid}:1.00:{_boot()}:",
                    "started_at": time.time() - 60, "prefect_home": str(home / "prefect"),
                    "database": str(home / "prefect" / "prefect.db"), "log": str(home / "server.log"),
                }))
                status = planflow(env, "server", "status", timeout=60)
                assert status.returncode == 3, status.stdout + status.stderr
                assert f"removed a stale record: pid {pid}" in status.stdout
                assert not (home / "server.json").exists()

            (home / "server.json").write_text(json.dumps({
                "pid": bystander.pid, "port": 9, "owner": f"{socket.gethostname()}:{bystander.pid}:1.00:{_boot()}:",
                "started_at": time.time(), "prefect_home": "", "database": "", "log": "",
            }))
            stopped = planflow(env, "server", "stop", timeout=60)
            assert stopped.returncode == 0 and "not running" in stopped.stdout
            assert bystander.poll() is None, "a reused pid is never signalled"
        finally:
            bystander.kill()
            bystander.wait()

    def test_a_configured_port_in_use_is_one_error_line_exit_3(self, tmp_path):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            env = cli_env(tmp_path / "prefect", PLANFLOW_HOME=str(tmp_path / "home"), PLANFLOW_SERVER_PORT=str(port))
            result = planflow(env, "server", "start", timeout=60)
        assert result.returncode == 3, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("planflow: error:") and f"port {port}" in lines[0], lines
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "home" / "server.json").exists()


def _boot() -> str:
    from planner.liveness import boot_id

    return boot_id()
