"""Planflow's command line: plan a goal, run it durably, print the answer.

    planflow "Plan a 3-day trip to Lisbon"          (or: python flows/run.py ...)
    planflow "Summarise the plan" --plan plan.json --report report.json
    planflow runs list
    planflow server status

One module per command group: `goal` (the default: run a goal), `runs` (the
ledger's runs and what to do with them), `server` (the local Prefect server runs
reuse, which keeps them viewable in the UI). Exit codes: 0 completed, 1 the run
failed, 2 bad input (empty goal, invalid plan file, unrepairable plan, bad
option), 3 a service is unavailable (ledger database, Prefect API), 130
interrupted or cancelled. The answer goes to stdout; the live view and errors go to stderr.
"""

from __future__ import annotations

import sys

from flows.cli.common import EXIT_BAD_INPUT, EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE

__all__ = ["main", "EXIT_COMPLETED", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_UNAVAILABLE", "EXIT_INTERRUPTED"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["runs"]:
        from flows.cli.runs import runs_main

        return runs_main(argv[1:])
    if argv[:1] == ["server"]:
        from flows.cli.server import server_main

        return server_main(argv[1:])
    from flows.cli.goal import goal_main

    return goal_main(argv)
