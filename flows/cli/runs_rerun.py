"""`planflow runs rerun KEY --from NODE [--description TEXT]`: a task and everything
downstream done again, everything upstream replayed (see planner/rerun.py).

The request is checked against the ledger before Prefect starts (an unknown task
exits 2 naming the run's tasks); the flow records the rerun as a new plan version.
"""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, add_run_options, fail, quiet_prefect

__all__ = ["add_rerun"]


def add_rerun(commands: Any) -> None:
    rerun = commands.add_parser(
        "rerun",
        help="run a task and everything downstream of it again; the rest is replayed",
        description="Make a new plan version of a finished or failed run in which task NODE and every "
        "task that depends on it run again (new results, tool calls made again); every other task is "
        "replayed from cache, at no model cost.",
    )
    rerun.add_argument("run_key")
    rerun.add_argument("--from", dest="rerun_from", required=True, metavar="NODE",
                       help="the task to run again (an id of the run's latest plan; see planflow runs show KEY)")
    rerun.add_argument("--description", metavar="TEXT", help="replace the task's text before it runs again")
    add_run_options(rerun)
    rerun.set_defaults(handler=_rerun)


def _rerun(args: argparse.Namespace, ledger: Any) -> int:
    from flows.cli.goal import run_goal
    from flows.cli.runs import known_run
    from planner.rerun import RerunError, plan_rerun

    run = known_run(ledger, args.run_key)
    if run is None:
        return EXIT_BAD_INPUT
    if run.status == "running":  # `planflow runs` has marked those whose process died as crashed
        return fail(
            f"run {run.run_key!r} is running now (flow run {run.flow_run_id}): a rerun starts from a finished "
            "or failed run; wait for it to end, or cancel it, then rerun",
            EXIT_FAILED,
        )
    try:
        plan_rerun(ledger.plan_versions(run.run_key), args.rerun_from, args.description, run_key=f"run {run.run_key!r}")
    except RerunError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    quiet_prefect(args.verbose)
    return run_goal(
        ledger, run.goal, run.run_key, None, args, rerun_from=args.rerun_from, rerun_description=args.description
    )
