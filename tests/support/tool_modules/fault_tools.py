"""Tools for the SIGKILL tests (tests/faults/test_fault_tools.py).

Every call appends a JSON line to the file named by $FAULT_TOOL_LOG *when it starts*, so
a test counts side effects where they happen, whatever the engine believes. The slow
tools hang only on their first call (the test kills the run there); a second call, a
resume's, answers at once, so a wrong re-run shows up as a count, not as a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os

from planner.tools import tool

HANG = 120.0  # longer than any test waits: the run is killed during it


def _entries() -> list[dict]:
    try:
        with open(os.environ["FAULT_TOOL_LOG"], encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _log(**fields: object) -> bool:
    """Record a call; True if it is the first call of this tool."""
    first = not any(e.get("tool") == fields["tool"] for e in _entries())
    with open(os.environ["FAULT_TOOL_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return first


@tool
def send_notice(team: str) -> str:
    """Send a notice to a team (a side effect: not safe to repeat)."""
    _log(tool="send_notice", team=team)
    return f"notice sent to {team}"


@tool
async def charge(amount: int, idempotency_key: str) -> str:
    """Charge an amount (a side effect: not safe to repeat); the first call hangs."""
    if _log(tool="charge", amount=amount, key=idempotency_key):
        await asyncio.sleep(HANG)
    return f"charged {amount}"


@tool(idempotent=True)
async def fetch_report(name: str, idempotency_key: str) -> str:
    """Fetch a report (safe to repeat); the first call hangs."""
    if _log(tool="fetch_report", name=name, key=idempotency_key):
        await asyncio.sleep(HANG)
    return f"report {name}: all good"
