"""`planflow runs cancel KEY`: stop a running run the way the Prefect UI's Cancel button does.

The request goes through the Prefect API the run's flow run lives on (the ledger keeps
its address): the flow run is set Cancelling, and the run, watching its own flow run
(flows/cancellation.py), stops its running tasks and records the cancel. The user's name
is noted in the ledger first, so the record says who. If that API cannot be reached but
the run's process lives on this host, the process gets SIGINT instead (what Ctrl-C
sends), which it takes as the same cancel.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import socket
import time
from typing import Any

from flows.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_COMPLETED,
    EXIT_UNAVAILABLE,
    credentials_for,
    fail,
    first_line,
    non_negative_int,
)

__all__ = ["add_cancel"]

API_TIMEOUT_SECONDS = 15.0


def add_cancel(commands: Any) -> None:
    cancel = commands.add_parser(
        "cancel", help="cancel a running run: its running tasks stop, finished ones are kept for a resume"
    )
    cancel.add_argument("run_key")
    cancel.add_argument("--wait", type=non_negative_int, default=30, metavar="SECONDS",
                        help="wait this long for the run to stop (default 30; 0: only ask)")
    cancel.set_defaults(handler=cancel_run)


def cancel_run(args: argparse.Namespace, ledger: Any) -> int:
    from flows.cli.runs import known_run

    run = known_run(ledger, args.run_key)
    if run is None:
        return EXIT_BAD_INPUT
    key = run.run_key
    if run.status != "running":
        return fail(f"run {key} is not running (it is {run.status}); nothing to cancel", EXIT_BAD_INPUT)
    user = _user()
    if not ledger.request_cancel(key, user):
        return fail(f"run {key} ended while the cancel was asked for (see: planflow runs show {key})", EXIT_BAD_INPUT)
    problem = _through_prefect(run, user)
    if problem is None:
        how = f"flow run {run.flow_run_id} set Cancelling"
    elif _signal_owner(run.owner):
        how = f"through Prefect it could not be ({problem}): sent SIGINT to its process"
    else:
        ledger.request_cancel(key, None)
        return fail(
            f"cannot cancel run {key}: {problem}, and its process ({run.owner or 'unknown'}) is not on this host; "
            "cancel its flow run in the Prefect UI",
            EXIT_UNAVAILABLE,
        )
    resume = f"resume with planflow runs resume {key}"
    if _wait_until_stopped(ledger, key, args.wait):
        ended = ledger.run(key)
        if ended.status == "cancelled":
            print(f"run {key} cancelled by {ended.cancelled_by} ({how}); the work done so far is kept: {resume}")
        else:
            print(f"run {key} ended {ended.status} before the cancel reached it ({how})")
        return EXIT_COMPLETED
    print(f"cancel of run {key} requested by {user} ({how}); it stops when its running tasks do; then {resume}")
    return EXIT_COMPLETED


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (a container): still say where it came from
        return f"uid {os.getuid()}"


def _through_prefect(run: Any, user: str) -> str | None:
    """Set the run's flow run Cancelling on its Prefect API; None if done, else what went wrong."""
    from prefect.settings import PREFECT_API_URL

    url = run.prefect_api_url or PREFECT_API_URL.value()
    if not url or not run.flow_run_id:
        return "the ledger has no Prefect API address for it"
    try:
        return asyncio.run(asyncio.wait_for(_set_cancelling(url, run.flow_run_id, user), API_TIMEOUT_SECONDS))
    except asyncio.TimeoutError:
        return f"the Prefect API at {url} did not answer within {API_TIMEOUT_SECONDS:.0f} s"
    except Exception as exc:  # connection refused, DNS, HTTP errors: the fallback decides
        return f"the Prefect API at {url}: {type(exc).__name__}: {first_line(exc)}"


async def _set_cancelling(url: str, flow_run_id: str, user: str) -> str | None:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import State

    async with PrefectClient(url, **credentials_for(url)) as client:  # credentials only to our own API
        state = State(type=StateType.CANCELLING, message=f"cancel requested by {user} (planflow runs cancel)")
        result = await client.set_flow_run_state(flow_run_id, state)
    if result.status == SetStateStatus.ACCEPT or (result.state is not None and result.state.is_cancelled()):
        return None
    reason = getattr(result.details, "reason", None) or result.status.value
    return f"Prefect refused to cancel flow run {flow_run_id}: {reason}"


def _signal_owner(owner: str | None) -> bool:
    """SIGINT to the run's process if it is alive on this host (its pid, start time and boot match)."""
    from planner.liveness import Owner, is_alive

    if not owner:
        return False
    try:
        parsed = Owner.parse(owner)
    except ValueError:
        return False
    if parsed.host != socket.gethostname() or parsed.started is None or not is_alive(owner, None):
        return False
    try:
        os.kill(parsed.pid, signal.SIGINT)
    except OSError:
        return False
    return True


def _wait_until_stopped(ledger: Any, run_key: str, seconds: int) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        run = ledger.run(run_key)
        if run is None or run.status != "running":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
