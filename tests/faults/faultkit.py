"""Tools for the fault-injection suite: CLI subprocesses killed as a whole process
group, a TCP proxy that can cut a dependency off (and bring it back) mid-run, a
throwaway PostgreSQL server, goal-aware fake-model responders, and secret scanners.

Nothing here mocks the product: faults are injected at the socket, the process or
the HTTP response, and the product is driven through its CLI or its flow.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.processes import group_members, kill_group
from support.flows import route  # noqa: F401  (re-exported: the faults tests route as the session does)

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_PY = REPO_ROOT / "flows" / "run.py"
CLI_TIMEOUT = 150.0

_GOAL = re.compile(r"^Goal: (.*)$", re.MULTILINE)


# -- the fake model ------------------------------------------------------------------


def goal_of(body: dict) -> str:
    """The goal a request belongs to (every Planflow prompt starts its user turn with 'Goal: ')."""
    # The last match: the planning prompt's few-shot examples carry "Goal: " lines of their own.
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            matches = _GOAL.findall(message.get("content") or "")
            if matches:
                return matches[-1]
    return ""


def plan_answer(*tasks: tuple[str, list[str]]) -> str:
    return json.dumps({"tasks": [{"id": i, "description": f"do {i}", "depends_on": d} for i, d in tasks]})


def decision(action: str, reason: str = "because", tasks: Iterable[tuple[str, str, list[str]]] = ()) -> str:
    return json.dumps(
        {"action": action, "reason": reason,
         "tasks": [{"id": i, "description": d, "depends_on": deps} for i, d, deps in tasks]}
    )


def prompt_of(call: Any) -> str:
    return call.body["messages"][-1]["content"]


def node_calls(server: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in server.calls:
        if call.key and call.key.startswith("node:"):
            counts[call.key[5:]] = counts.get(call.key[5:], 0) + 1
    return counts


def calls_by_goal(server: Any, goal: str) -> dict[str, list[Any]]:
    """One run's requests (by its goal), grouped by route key, in arrival order (missing keys: [])."""
    out: dict[str, list[Any]] = collections.defaultdict(list)
    for call in server.calls:
        if goal_of(call.body) == goal:
            out[call.key].append(call)
    return out


class GoalScripts:
    """A fake-model responder for several runs at once: replies scripted per (goal, route key),
    consumed in order, the last one reused; unscripted nodes answer 'result of node:<id>'."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], list[Any]] = {}

    def script(self, goal: str, key: str, *replies: Any) -> None:
        with self._lock:
            self._queues.setdefault((goal, key), []).extend(replies)

    def __call__(self, body: dict) -> Any:
        goal, key = goal_of(body), route(body)
        with self._lock:
            queue = self._queues.get((goal, key))
            if queue:
                return queue.pop(0) if len(queue) > 1 else queue[0]
        if key.startswith("node:"):
            return f"result of {key}"
        raise LookupError(f"nothing scripted for {key!r} of goal {goal!r}")


# -- waiting ---------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = 90.0,
    proc: subprocess.Popen | None = None,
    stderr: Path | None = None,
    interval: float = 0.02,
) -> Any:
    """Poll `predicate` until truthy; fail (with the CLI's stderr) on timeout or if `proc` ends."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        tail = stderr.read_text(errors="replace")[-3000:] if stderr is not None and stderr.exists() else ""
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the CLI ended (exit {proc.returncode}) before: {what}\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for: {what}\n{tail}")
        time.sleep(interval)


def kill_each_at_its_point(
    cli: "Cli",
    procs: Mapping[str, tuple[subprocess.Popen, Path, Path]],
    reached: Callable[[str], bool],
    on_kill: Callable[[str], None],
    timeout: float,
    interval: float = 0.005,
) -> None:
    """SIGKILL each run's process group as `reached(name)` turns true, then `on_kill(name)`;
    fail if a CLI ends first or a point is not reached within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pending = set(procs)
    while pending:
        for name in sorted(pending):
            proc, _, err = procs[name]
            if reached(name):
                cli.kill(proc)
                on_kill(name)
                pending.discard(name)
            elif proc.poll() is not None:
                pytest.fail(f"{name}: the CLI ended (exit {proc.returncode}) before its kill point:\n"
                            f"{err.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"kill points never reached: {sorted(pending)}")
        time.sleep(interval)


# -- the CLI as a subprocess -------------------------------------------------------------


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("planflow: error:")]


def group_alive(pgid: int) -> list[int]:
    return [pid for pid, _, _ in group_members(pgid)]


class Cli:
    """Runs `flows/run.py` in its own session, output to files, killed as a group afterwards."""

    def __init__(self, env: Mapping[str, str], out_dir: Path) -> None:
        self.env = dict(env)
        self.out_dir = out_dir
        self._n = 0
        self._started: list[subprocess.Popen] = []

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(RUN_PY), *args]

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen, Path, Path]:
        self._n += 1
        out, err = self.out_dir / f"cli-{self._n}.stdout", self.out_dir / f"cli-{self._n}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                self.command(*args),
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                env={**self.env, **(env or {})},
                cwd=str(self.out_dir),
                start_new_session=True,
            )
        self._started.append(proc)
        return proc, out, err

    def kill(self, proc: subprocess.Popen) -> None:
        kill_group(proc.pid)
        if proc.poll() is None:
            proc.wait(timeout=15)

    def run(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = CLI_TIMEOUT) -> CliResult:
        started = time.monotonic()
        proc, out, err = self.start(*args, env=env)
        try:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(proc)
                pytest.fail(
                    f"the CLI did not finish within {timeout:.0f}s: {args}\n"
                    f"{err.read_text(errors='replace')[-3000:]}"
                )
        finally:
            self.kill(proc)
        return CliResult(code, out.read_text(errors="replace"), err.read_text(errors="replace"),
                         time.monotonic() - started)

    def close(self) -> None:
        for proc in self._started:
            kill_group(proc.pid)
            if proc.poll() is None:
                proc.wait(timeout=15)


def assert_one_clean_error_line(result: CliResult, code: int, *fragments: str) -> str:
    """Exit `code`, exactly one stderr line 'planflow: error: ...' naming every fragment, no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{result.stderr[-4000:]}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{result.stderr[-4000:]}"
    line = lines[0]
    assert line.startswith("planflow: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


_PREFECT_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\| ")


def assert_cli_error(result: CliResult, code: int, *fragments: str) -> str:
    """A run that reached Prefect and failed: exit `code`, nothing on stdout, one
    'planflow: error: ...' line naming every fragment, and nothing after it but Prefect's own
    log lines (Prefect's ERROR logs and tracebacks on stderr are a known bug, xfailed in
    tests/cli/test_cli.py; an uncaught exception after the error line is not tolerated)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{result.stderr[-4000:]}"
    assert result.stdout == "", result.stdout[-2000:]
    assert len(result.error_lines) == 1, f"expected one error line:\n{result.stderr[-4000:]}"
    after = lines[lines.index(result.error_lines[0]) + 1:]
    assert all(_PREFECT_LOG_LINE.match(line) for line in after), f"after the error line:\n{after}"
    line = result.error_lines[0]
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# -- a TCP proxy that can cut a dependency off -------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` resets every connection and refuses new
    ones (the dependency is gone); `restore()` listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._open()

    def _open(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _reset(client), _reset(upstream)
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True, name="proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = list(self._conns), set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            except OSError:
                pass
            listener.close()
        for conn in conns:
            _reset(conn)

    def restore(self) -> None:
        if self._listener is None:
            self._open()

    close = cut


class MidBodyResetProxy:
    """An HTTP front for the fake model server that forwards every request, but for the
    first `times` requests `should_cut(body)` picks, sends the status line, the headers and
    half of the body, then resets the connection: a connection reset mid-response."""

    def __init__(self, target_base_url: str, should_cut: Callable[[dict], bool], times: int = 1) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(target_base_url)
        owner = self
        self.cut_count = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import http.client

                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=raw, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with owner._lock:
                    cut = owner.cut_count < times and should_cut(body)
                    owner.cut_count += int(cut)
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.end_headers()
                if not cut:
                    self.wfile.write(payload)
                    return
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                _reset(self.connection)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{target.path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def closed_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a throwaway PostgreSQL -------------------------------------------------------------------


class Postgres:
    """A real PostgreSQL server in a temporary directory, run as the `postgres` user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="planflow-pg-"))
        self.data = self.dir / "data"
        self.port = closed_port()
        self.user = "planflow"
        self.password = "pg-secret-" + os.urandom(4).hex()
        shutil.chown(self.dir, "postgres", "postgres")

    def _as_postgres(self, *cmd: str, timeout: float = 120) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(self.dir))

    def start(self) -> Postgres:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        shutil.chown(pwfile, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                          "-A", "scram-sha-256", "--no-sync")
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "120", "-l", str(self.dir / "log"), "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )
        return self

    def url(self, port: int | None = None, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{port or self.port}/{database}"

    def stop(self) -> None:
        try:
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", timeout=60)
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# -- secrets ------------------------------------------------------------------------------------


def needles(marker: str) -> list[bytes]:
    """The marker as raw bytes and as it would look inside base64 at each of the 3 alignments
    (Prefect stores pickled results base64-encoded in JSON result records)."""
    raw = marker.encode()
    found = [raw]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        first_group = 0 if pad == 0 else 1  # the first 3-byte group made of marker bytes only
        last_group = (pad + len(raw)) // 3
        found.append(encoded[4 * first_group: 4 * last_group])
    return found


def leaks_in_bytes(data: bytes, marker: str) -> bool:
    return any(n in data for n in needles(marker))


def files_leaking(marker: str, roots: Iterable[Path]) -> list[str]:
    leaks = []
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if leaks_in_bytes(data, marker):
                leaks.append(str(path))
    return leaks


def sqlite_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite database, read with the stdlib driver."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
    finally:
        conn.close()


def exception_chain_text(error: BaseException) -> str:
    """str/repr of an exception and of every exception chained to it, suppressed or not."""
    import traceback

    parts, seen, stack = [], set(), [error]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        parts += [str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(getattr(exc, "args", ()))]
        stack += [exc.__cause__, exc.__context__]
    return "\n".join(parts)
