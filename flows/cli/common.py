"""What every `planflow` command shares: exit codes, one-line errors, the ledger, run options."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Unavailable(Exception):
    """A service the command needs (the ledger database, the Prefect API) cannot be reached."""


def quiet_prefect(verbose: bool) -> None:
    """Set before Prefect is imported: no telemetry (no network), logs only if asked,
    and patience with a slow machine when starting the local temporary server."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry notice; we make no such calls
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        # Errors reach the user as one line from us; Prefect's own (with tracebacks)
        # still go to the Prefect UI, only not to this console.
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"


def fail(message: str, code: int) -> int:
    """Print `planflow: error: MESSAGE` on one line of stderr; return `code` to exit with."""
    if code == EXIT_UNAVAILABLE:
        # Prefect's API log handler prints "--- Error logging to API ---" and the error
        # with no newline after it: start on a line of our own, and let it say no more.
        logging.raiseExceptions = False
        print(file=sys.stderr)
    print(f"planflow: error: {message}", file=sys.stderr)
    return code


def open_ledger() -> Any:
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    try:
        ledger = Ledger(PlanflowSettings().ledger_url)
        ledger.check()
    except Exception as exc:
        raise Unavailable(f"cannot open the ledger database: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return ledger


def first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else ""


def lost_service(exc: BaseException, run_key: str) -> str | None:
    """Name the service a run lost (the ledger database, the Prefect API) and how to
    resume once it is back; None if `exc` is not such an outage."""
    import httpx
    from sqlalchemy.exc import InterfaceError, OperationalError

    resume = f"the work done so far is kept; when it is back, resume with --run-key {run_key}"
    error: BaseException | None = exc
    for _ in range(10):  # the exception and what it was raised from
        if error is None:
            break
        if isinstance(error, (OperationalError, InterfaceError)):  # the driver's error, never the URL
            return f"the ledger database is unavailable ({type(error.orig).__name__}: {first_line(error.orig)}); {resume}"
        if isinstance(error, httpx.TransportError):
            return f"the Prefect API at {prefect_api_url()} is unreachable ({type(error).__name__}: {first_line(error)}); {resume}"
        error = error.__cause__ or error.__context__
    return None


def prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "Prefect's temporary local server"


def credentials_for(api_url: str) -> dict[str, Any]:
    """`api_key`/`auth_string` for a Prefect client of `api_url`: this process's, only when that
    is this process's own API, never sent to another URL the ledger names (a shared ledger is
    not trusted with them)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    own = api_url.rstrip("/") == (PREFECT_API_URL.value() or "").rstrip("/")
    return {
        "api_key": PREFECT_API_KEY.value() if own else None,
        "auth_string": PREFECT_API_AUTH_STRING.value() if own else None,
    }


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of how a run executes, shared by `GOAL` and the `runs` commands that run one."""
    parser.add_argument("--model", help="model name, or 'embedded' for the bundled SmolLM2")
    parser.add_argument("--max-parallel", type=positive_int, metavar="N", help="most tasks running at once (default 4)")
    parser.add_argument("--max-retries", type=non_negative_int, metavar="N", help="retries after a transient error (default 3)")
    replans = parser.add_mutually_exclusive_group()
    replans.add_argument("--replan-on-failure", dest="replan_on_failure", action="store_true", default=None,
                         help="when a task fails for good, let the replanner rewrite the remaining work (default)")
    replans.add_argument("--no-replan", dest="replan_on_failure", action="store_false",
                         help="fail the run at the first permanent task failure")
    parser.add_argument("--max-replans", type=non_negative_int, metavar="N", help="replans allowed per run (default 2)")
    parser.add_argument("--on-exhausted", choices=["fail", "ask"],
                        help="when no replan is left: fail (default), or pause and ask a person "
                             "(the Prefect UI, or planflow runs hint|edit|abort KEY)")
    parser.add_argument("--approve-plan", action="store_true", default=None,
                        help="pause before any task runs so a person can review or edit the plan "
                             "(the Prefect UI, or planflow runs approve|edit|abort KEY)")
    tools = parser.add_argument_group("tools (what a task may call; not with the embedded model)")
    tools.add_argument("--tools", action="append", metavar="MODULE",
                       help="offer every @tool in this module (dotted name or .py path); repeatable")
    tools.add_argument("--mcp", action="append", metavar="'COMMAND ARGS'",
                       help="offer the tools of this MCP server (stdio command, or an http(s) URL); repeatable")
    tools.add_argument("--no-builtin-tools", dest="builtin_tools", action="store_false", default=None,
                       help="do not offer the calculator and the workspace file tools")
    tools.add_argument("--max-steps", type=positive_int, metavar="N",
                       help="model turns one task may take with its tools before it fails (default 8)")
    tools.add_argument("--workspace", type=Path, metavar="DIR",
                       help="directory the file tools use (default PLANFLOW_HOME/workspaces/<run key>)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report of the run here")
    parser.add_argument("--quiet", action="store_true", help="print only the answer (and errors)")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's logs too")
