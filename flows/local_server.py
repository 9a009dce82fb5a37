"""The local Prefect server: one `prefect server start` per PLANFLOW_HOME that outlives the CLI.

Runs reuse it, so start-up skips Prefect's temporary server (6-15 s) and every
flow run stays viewable in the UI after its command ends. It listens on
127.0.0.1 only, keeps its SQLite database in PLANFLOW_HOME/prefect/ and its log
in PLANFLOW_HOME/server.log, and is described by PLANFLOW_HOME/server.json:

    {"pid": 4242, "port": 4200, "owner": "host:4242:5231.27:083e06d8:", "started_at": 1764..., ...}

`owner` names the process exactly (pid, start time, boot id: planner/liveness.py),
so a record whose process died, or whose pid now belongs to another process, is
recognised as stale and never signalled. The server runs in a session of its own:
stopping it signals that process group and nothing else.

Services it does not run (measured nowhere near free on a 2-core machine, and
unused by local CLI runs): the scheduler and late-runs services (deployment
schedules) and the foreman (work pools and workers). What the UI shows (flow and
task runs, states, logs, artifacts, events, automations, pauses) keeps its services.
Deployments belong on a server of their own (scripts/prefect_server.sh).

This module imports no Prefect: the CLI decides which API to use before Prefect
is imported (Prefect reads PREFECT_API_URL at import).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from planner.errors import PlanflowError

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "LocalServer",
    "LocalServerError",
    "PortInUseError",
    "ServerRecord",
    "api_reachable",
    "configured_api_url",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
HEALTH_TIMEOUT = 2.0
"""Seconds one health request may take; an idle server answers in a few ms."""

START_TIMEOUT = 180.0
"""Seconds to wait for a new server: its first start migrates a fresh database (20-50 s on 2 cores)."""

STOP_TIMEOUT = 15.0
"""Seconds a server gets to shut down after SIGTERM before its group is SIGKILLed."""

SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_ENABLED": "true",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",  # no access log line per request in server.log
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
}


class LocalServerError(PlanflowError, RuntimeError):
    """The local Prefect server cannot be started or reached (exit code 3)."""


class PortInUseError(LocalServerError):
    """The configured port is taken by another program."""


@dataclass(frozen=True)
class ServerRecord:
    """What server.json says about a started server."""

    pid: int
    port: int
    owner: str
    started_at: float
    prefect_home: str
    database: str
    log: str

    @property
    def url(self) -> str:
        """The UI's root."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


class LocalServer:
    """The local server of one PLANFLOW_HOME: start, find, check and stop it."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port
        """The configured port (PLANFLOW_SERVER_PORT); None: DEFAULT_PORT if free, else any free port."""

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def database(self) -> Path:
        return self.prefect_home / "prefect.db"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while finding or starting the server: two CLIs starting at once start one server."""
        import fcntl

        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record(self) -> ServerRecord | None:
        """server.json as written, whether or not its process still runs (None if absent or unreadable)."""
        try:
            return ServerRecord(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> tuple[ServerRecord | None, ServerRecord | None]:
        """(the record of the server that runs, a stale record just removed): at most one is set."""
        record = self.record()
        if record is None:
            if self.state_file.exists():  # unreadable: nothing to signal, nothing to keep
                self.state_file.unlink(missing_ok=True)
            return None, None
        if _is_that_process(record):
            return record, None
        self.state_file.unlink(missing_ok=True)
        return None, record

    def start(self) -> ServerRecord:
        """Start a server in a session of its own and record it; does not wait for it to answer.

        Raises `PortInUseError` if the configured port is taken.
        """
        port = self._pick_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        # It outlives this command: it gets neither Prefect's settings of this shell nor its
        # secrets (model API keys, the ledger's database URL), only what runs a program.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_", "PLANFLOW_"))}
        env.update(SERVER_ENV)
        env.update(
            {
                "PREFECT_HOME": str(self.prefect_home),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
                "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
            }
        )
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port), "--analytics-off"]
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} planflow: {' '.join(command[1:])}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.home),
                start_new_session=True,  # outlives the CLI; `stop` signals this group only
            )
        from planner.liveness import Owner

        try:
            owner = str(Owner.of_process(process.pid))
        except Exception:  # it died at once (reaped by nobody yet): report it when waiting
            owner = ""
        record = ServerRecord(
            pid=process.pid,
            port=port,
            owner=owner,
            started_at=time.time(),
            prefect_home=str(self.prefect_home),
            database=str(self.database),
            log=str(self.log_file),
        )
        partial = self.state_file.with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(record), indent=2) + "\n")
        partial.replace(self.state_file)
        return record

    def wait_until_healthy(self, record: ServerRecord, timeout: float = START_TIMEOUT) -> None:
        """Return once the server answers; raise `LocalServerError` if it died or never answered."""
        deadline = time.monotonic() + timeout
        while not healthy(record.port):
            if not _is_that_process(record):
                self.state_file.unlink(missing_ok=True)
                raise LocalServerError(
                    f"the local Prefect server exited while starting ({self._last_log_line()}); see {record.log}"
                )
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"the local Prefect server (pid {record.pid}) did not answer at {record.url} within "
                    f"{timeout:.0f} s; see {record.log}, or stop it with `planflow server stop`"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT) -> ServerRecord | None:
        """Stop the running server and every process of its group; None if none was running."""
        record, _ = self.running()
        if record is None:
            return None
        _signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(record.pid):
            _signal_group(record.pid, signal.SIGKILL)
            while _group_alive(record.pid) and time.monotonic() < deadline + 5:
                time.sleep(0.05)
        self.state_file.unlink(missing_ok=True)
        return record

    def _pick_port(self) -> int:
        if self.port is not None:
            if not _port_free(self.port):
                raise PortInUseError(
                    f"port {self.port} on {HOST} is in use by another program; "
                    "set PLANFLOW_SERVER_PORT to a free port (or unset it to pick one)"
                )
            return self.port
        if _port_free(DEFAULT_PORT):
            return DEFAULT_PORT
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]

    def _last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "no output"


def healthy(port: int, timeout: float = HEALTH_TIMEOUT) -> bool:
    """True if a Prefect API on `port` of 127.0.0.1 answers its health check."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", "/api/health")
        return connection.getresponse().status in (200, 401, 403)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def api_reachable(api_url: str, path: str = "/health", timeout: float = HEALTH_TIMEOUT) -> bool:
    """True if `GET api_url + path` answers 200 (e.g. `/flow_runs/<id>`: that flow run is there),
    or 401/403: a server that wants credentials (Prefect Cloud, an authenticated server) is
    there; this check sends none."""
    from urllib.parse import urlsplit

    parts = urlsplit(api_url.rstrip("/") + path)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status in (200, 401, 403)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def configured_api_url(environ: dict[str, str] | None = None) -> str | None:
    """The Prefect API the user chose: PREFECT_API_URL, else the active Prefect profile's.

    Read without importing Prefect (a TOML file), so the CLI never overrides a profile.
    Prefect's other sources (`.env`, `prefect.toml`, `[tool.prefect]` in pyproject.toml)
    are not read here: an API set only there is overridden by the local server; set
    PREFECT_API_URL or a profile instead.
    """
    env = os.environ if environ is None else environ
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        import tomllib

        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = env.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = (profiles.get("profiles") or {}).get(active) or {}
    url = settings.get("PREFECT_API_URL") if isinstance(settings, dict) else None
    return str(url) if url else None


def _is_that_process(record: ServerRecord) -> bool:
    """The recorded process still runs (same pid, start time and boot), not a pid reused since."""
    from planner.liveness import is_alive

    return bool(record.owner) and is_alive(record.owner, None)


def _port_free(port: int) -> bool:
    """Nothing listens on `port` (SO_REUSEADDR, as the server binds: a closed server's
    TIME_WAIT connections do not make its port look taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Some process of group `pgid` still runs (zombies excepted: the leader is reaped by init)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not os.path.isdir("/proc")
