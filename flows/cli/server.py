"""`planflow server start|stop|status`: the local Prefect server runs reuse, and how a run picks its API.

A run's Prefect API, decided before Prefect is imported (`choose_prefect_api`):
1. PREFECT_API_URL, or the active Prefect profile's API: used as it is;
2. PLANFLOW_SERVER=temporary: Prefect's temporary server, which stops with the command;
3. otherwise (the default) the local server of PLANFLOW_HOME (flows/local_server.py),
   started on first use with one line saying so and how to stop it, reused afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from flows.cli.common import EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_UNAVAILABLE, fail

__all__ = ["ApiChoice", "choose_prefect_api", "server_main", "started_notice"]


@dataclass
class ApiChoice:
    """Which Prefect API this command's runs use; for `local`, the server and whether we started it."""

    kind: Literal["configured", "temporary", "local"]
    server: Any = None  # LocalServer
    record: Any = None  # ServerRecord
    started: bool = False

    def wait(self) -> None:
        """Block until the local server answers (a no-op for the other kinds); raises LocalServerError."""
        if self.kind == "local":
            self.server.wait_until_healthy(self.record)


def _settings() -> Any:
    from planner.settings import PlanflowSettings

    return PlanflowSettings()


def choose_prefect_api(settings: Any) -> ApiChoice:
    """Point PREFECT_API_URL at the local server (starting it if needed) unless the user chose an API.

    Call before Prefect is imported: Prefect reads PREFECT_API_URL once, at import.
    Starting does not wait for the server; `ApiChoice.wait()` does, so the imports
    that follow overlap its start. Raises `LocalServerError` (e.g. the port is taken).
    """
    from flows.local_server import LocalServer, configured_api_url

    if configured_api_url():
        return ApiChoice("configured")
    if settings.server == "temporary" or "prefect" in sys.modules:
        # An in-process caller that already imported Prefect keeps the API Prefect read.
        return ApiChoice("temporary")
    server = LocalServer(settings.home, settings.server_port)
    with server.lock():
        record, _ = server.running()
        started = record is None
        if record is None:
            record = server.start()
    os.environ["PREFECT_API_URL"] = record.api_url
    return ApiChoice("local", server, record, started)


def started_notice(choice: ApiChoice) -> str:
    """The one line a run prints when it started the local server: what keeps running, how to stop it."""
    record = choice.record
    return (
        f"planflow: started a local Prefect server at {record.url} (pid {record.pid}) for this and later runs; "
        "it keeps running so runs stay viewable in its UI: stop it with `planflow server stop` "
        "(PLANFLOW_SERVER=temporary: no server left running)"
    )


def server_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="planflow server",
        description="The local Prefect server (API and UI on 127.0.0.1) that runs reuse and that keeps them "
        "viewable after the command ends. Its database and log live in PLANFLOW_HOME; port: "
        "PLANFLOW_SERVER_PORT (default 4200 if free).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start it (and wait until it answers); nothing if it runs").set_defaults(handler=_start)
    commands.add_parser("stop", help="stop it and every process it started").set_defaults(handler=_stop)
    commands.add_parser("status", help="up or down, URL, pid, uptime, database (exit 3 if down)").set_defaults(
        handler=_status
    )
    args = parser.parse_args(argv)
    try:
        settings = _settings()
    except Exception as exc:  # a PLANFLOW_* variable that cannot be read
        return fail(f"bad setting: {' '.join(str(exc).split())[:300]}", EXIT_BAD_INPUT)
    from flows.local_server import LocalServer

    return args.handler(LocalServer(settings.home, settings.server_port))


def _start(server: Any) -> int:
    from flows.local_server import LocalServerError

    try:
        with server.lock():
            record, stale = server.running()
            if stale is not None:
                print(f"removed a stale record: pid {stale.pid} is no longer the server", file=sys.stderr)
            if record is not None:
                print(f"already running at {record.url} (pid {record.pid})")
                return EXIT_COMPLETED
            record = server.start()
        print(f"starting the local Prefect server (pid {record.pid}; the first start sets up its database) …",
              file=sys.stderr)
        server.wait_until_healthy(record)
    except LocalServerError as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    print(f"up at {record.url} (pid {record.pid}, database {record.database}, log {record.log}); "
          "stop it with `planflow server stop`")
    return EXIT_COMPLETED


def _stop(server: Any) -> int:
    record = server.stop()
    print(f"stopped the local Prefect server (pid {record.pid})" if record else "not running")
    return EXIT_COMPLETED


def _status(server: Any) -> int:
    from flows.local_server import healthy

    record, stale = server.running()
    if record is None:
        note = f" (removed a stale record: pid {stale.pid} is no longer the server)" if stale else ""
        print(f"down{note}; start it with `planflow server start` (runs also start it on first use)")
        print(f"database {server.database}")
        return EXIT_UNAVAILABLE
    state = "up" if healthy(record.port) else "starting (not answering yet)"
    print(f"{state} at {record.url}")
    print(f"pid {record.pid} · uptime {_duration(time.time() - record.started_at)}")
    print(f"database {record.database}")
    print(f"log {record.log}")
    return EXIT_COMPLETED if state == "up" else EXIT_UNAVAILABLE


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
