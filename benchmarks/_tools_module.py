"""The tool the `tools` benchmark offers (`--tools benchmarks/_tools_module.py`).

`tick(i)` is a side effect on purpose (not idempotent, the default): with
$BENCH_TOOL_LOG set, each call appends `<run key> <i>` to that file and syncs it
before returning, so a count survives a SIGKILL and shows any call made twice.
Without it, a call only counts in memory: the cheapest tool there is, so the
benchmark measures what running it as a durable step adds.
"""

from __future__ import annotations

import os

from planner.tools import tool

CALLS: dict[int, int] = {}


def tick_plainly(i: int, run: str = "") -> str:
    """The tool's body, callable without any of Planflow."""
    path = os.environ.get("BENCH_TOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{run or os.environ.get('BENCH_RUN_KEY', '-')} {i}\n")
            f.flush()
            os.fsync(f.fileno())
    else:
        CALLS[i] = CALLS.get(i, 0) + 1
    return f"tick {i} recorded"


@tool
def tick(i: int) -> str:
    """Record tick number i (a side effect: not safe to repeat).

    Args:
        i: the tick's number, 1, 2, 3, ...
    """
    return tick_plainly(i)
