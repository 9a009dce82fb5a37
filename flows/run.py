"""Planflow's command line: plan a goal, run it durably, print the answer.

    python flows/run.py "Plan a 3-day trip to Lisbon"
    python flows/run.py "Summarise the plan" --plan plan.json --report report.json

    python flows/run.py runs list

Exit codes: 0 completed, 1 the run failed, 2 bad input (empty goal, invalid
plan file, unrepairable plan, bad option), 3 a service is unavailable (ledger
database, Prefect API), 130 interrupted. The answer goes to stdout; the live
view and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable, not flows/
    _root = str(Path(__file__).resolve().parents[1])
    sys.path[:] = [_root] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

ENV_HELP = """\
environment:
  OPENAI_BASE_URL, OPENAI_API_KEY   an OpenAI-compatible endpoint; if neither is set,
                                    the bundled SmolLM2 model runs locally (no network)
  PLANFLOW_MODEL                    model name (default gpt-4o-mini; 'embedded' for SmolLM2)
  PLANFLOW_HOME                     ledger and logs (default ~/.planflow)
  PLANFLOW_DATABASE_URL             ledger database (default sqlite:///$PLANFLOW_HOME/planflow.db)
  PLANFLOW_MAX_TASKS                most tasks in a model-made plan (default 12)
  PLANFLOW_REQUEST_TIMEOUT          seconds per model call (default 120)
  PLANFLOW_RETRY_BACKOFF            backoff base in seconds (default 1; delays 1, 2, 4, ...)
  PLANFLOW_CONTEXT_CHARS            characters of each dependency result given to a task (default 4000)
  PREFECT_API_URL                   run against a Prefect server instead of a local temporary one

runs (the ledger, for people without the Prefect UI open):
  planflow runs list                list recent runs and their status
  planflow runs show KEY [--json]   one run: plan versions, tasks, tokens (--json: the report)
  planflow runs resume KEY          resume a run by key (same as GOAL --run-key KEY)
  planflow --resume FLOW_RUN_ID     resume the run that flow run belongs to

exit codes: 0 completed · 1 run failed · 2 bad input · 3 a service (ledger, Prefect API)
unavailable · 130 interrupted. Re-running with the same --run-key resumes: finished tasks
are replayed, not re-paid."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planflow",
        description="Plan a goal with an LLM, run the plan as a durable Prefect flow, print the answer.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("goal", nargs="?", help="what you want done, in plain words")
    parser.add_argument("--resume", metavar="FLOW_RUN_ID", help="resume the run of this Prefect flow run (goal not needed)")
    parser.add_argument("--plan", type=Path, metavar="FILE", help='run this plan JSON {"tasks": [...]} instead of planning')
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--run-key", metavar="KEY", help="name of the run; re-running a key resumes it (default: from the goal)")
    keys.add_argument("--fresh", action="store_true", help="start a new run even if this goal ran before")
    add_run_options(parser)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of how a run executes, shared by `GOAL` and `runs resume KEY`."""
    parser.add_argument("--model", help="model name, or 'embedded' for the bundled SmolLM2")
    parser.add_argument("--max-parallel", type=_positive_int, metavar="N", help="most tasks running at once (default 4)")
    parser.add_argument("--max-retries", type=_non_negative_int, metavar="N", help="retries after a transient error (default 3)")
    replans = parser.add_mutually_exclusive_group()
    replans.add_argument("--replan-on-failure", dest="replan_on_failure", action="store_true", default=None,
                         help="when a task fails for good, let the replanner rewrite the remaining work (default)")
    replans.add_argument("--no-replan", dest="replan_on_failure", action="store_false",
                         help="fail the run at the first permanent task failure")
    parser.add_argument("--max-replans", type=_non_negative_int, metavar="N", help="replans allowed per run (default 2)")
    parser.add_argument("--on-exhausted", choices=["fail", "ask"],
                        help="when no replan is left: fail (default), or pause and ask a person in the Prefect UI")
    parser.add_argument("--approve-plan", action="store_true", default=None,
                        help="pause before any task runs so a person can review or edit the plan in the Prefect UI")
    tools = parser.add_argument_group("tools (what a task may call; not with the embedded model)")
    tools.add_argument("--tools", action="append", metavar="MODULE",
                       help="offer every @tool in this module (dotted name or .py path); repeatable")
    tools.add_argument("--mcp", action="append", metavar="'COMMAND ARGS'",
                       help="offer the tools of this MCP server (stdio command, or an http(s) URL); repeatable")
    tools.add_argument("--no-builtin-tools", dest="builtin_tools", action="store_false", default=None,
                       help="do not offer the calculator and the workspace file tools")
    tools.add_argument("--max-steps", type=_positive_int, metavar="N",
                       help="model turns one task may take with its tools before it fails (default 8)")
    tools.add_argument("--workspace", type=Path, metavar="DIR",
                       help="directory the file tools use (default PLANFLOW_HOME/workspaces/<run key>)")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report of the run here")
    parser.add_argument("--quiet", action="store_true", help="print only the answer (and errors)")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's logs too")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _quiet_prefect(verbose: bool) -> None:
    """Set before Prefect is imported: no telemetry (no network), logs only if asked,
    and patience with a slow machine when starting the local temporary server."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry notice; we make no such calls
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        # Errors reach the user as one line from us; Prefect's own (with tracebacks)
        # still go to the Prefect UI, only not to this console.
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"


def _fail(message: str, code: int) -> int:
    if code == EXIT_UNAVAILABLE:
        # Prefect's API log handler prints "--- Error logging to API ---" and the error
        # with no newline after it: start on a line of our own, and let it say no more.
        logging.raiseExceptions = False
        print(file=sys.stderr)
    print(f"planflow: error: {message}", file=sys.stderr)
    return code


def _load_plan(path: Path) -> dict[str, Any]:
    """Read and strictly check a plan file before anything starts (fail fast, exit 2)."""
    from planner.compiler import compile_plan
    from planner.errors import PlanError, UserInputError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read plan file {str(path)!r}: {exc.strerror}") from None
    try:
        return compile_plan(raw, strict=True).plan.to_json_dict()
    except PlanError as exc:
        raise PlanError(f"plan file {str(path)!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["runs"]:
        from flows.runs_cli import runs_main

        return runs_main(argv[1:], run_goal=_run_goal)
    args = build_parser().parse_args(argv)
    _quiet_prefect(args.verbose)

    from planner.errors import UserInputError
    from planner.run_keys import default_run_key, fresh_run_key, normalise_goal

    try:
        ledger = _open_ledger()
    except _Unavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    run_key = args.run_key
    goal_text = args.goal
    if args.resume:
        run = ledger.run_by_flow_run(args.resume)
        if run is None:
            return _fail(f"no run in the ledger has flow run {args.resume!r} (see: planflow runs list)", EXIT_BAD_INPUT)
        run_key, goal_text = run.run_key, goal_text or run.goal
    try:
        goal = normalise_goal(goal_text or "")
        plan = _load_plan(args.plan) if args.plan else None
        if args.tools:  # a module that cannot load is the user's to fix: say so before Prefect starts
            from planner.tools import load_tools_from

            load_tools_from(args.tools)
    except UserInputError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    run_key = run_key or (fresh_run_key(goal) if args.fresh else default_run_key(goal))
    return _run_goal(ledger, goal, run_key, plan, args)


class _Unavailable(Exception):
    """A service the run needs cannot be reached."""


def _open_ledger() -> Any:
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    try:
        ledger = Ledger(PlanflowSettings().ledger_url)
        ledger.check()
    except Exception as exc:
        raise _Unavailable(f"cannot open the ledger database: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return ledger


def _run_goal(ledger: Any, goal: str, run_key: str, plan: dict[str, Any] | None, args: argparse.Namespace) -> int:
    """Run (or resume) one goal under `run_key`, with the live view; return the exit code."""
    import asyncio

    from rich.console import Console

    from flows.display import LiveRunView
    from flows.plan_and_execute import plan_and_execute
    from planner.errors import PlanflowError, RunInProgressError, UserInputError
    from planner.report import build_report
    from planner.settings import PlanflowSettings

    console = Console(stderr=True)
    started = time.monotonic()
    view = LiveRunView(ledger, run_key, console) if not args.quiet else None
    if view is not None and PlanflowSettings().uses_embedded_model and args.model in (None, "embedded"):
        view.note = f"starting the embedded model and planning {run_key} …"
    try:
        if view is not None:
            view.__enter__()
        try:
            state = asyncio.run(
                plan_and_execute(
                    goal=goal,
                    run_key=run_key,
                    plan=plan,
                    model=args.model,
                    max_parallel=args.max_parallel,
                    max_retries=args.max_retries,
                    replan_on_failure=args.replan_on_failure,
                    max_replans=args.max_replans,
                    on_exhausted=args.on_exhausted,
                    approve_plan=args.approve_plan,
                    tools=args.tools,
                    mcp=args.mcp,
                    builtin_tools=args.builtin_tools,
                    max_steps=args.max_steps,
                    workspace=str(args.workspace) if args.workspace else None,
                    return_state=True,
                )
            )
        finally:
            if view is not None:
                view.__exit__(None, None, None)
    except KeyboardInterrupt:
        return _fail(f"interrupted; resume with --run-key {run_key}", EXIT_INTERRUPTED)
    except Exception as exc:  # Prefect could not start the flow run, or lost its API during it
        lost = _lost_service(exc, run_key)
        return _fail(lost or f"could not run the flow: {type(exc).__name__}: {_first_line(exc)}", EXIT_UNAVAILABLE)

    outcome = state.result(raise_on_failure=False) if state.is_completed() or state.is_failed() else None
    if args.report and ledger.run(run_key) is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(build_report(ledger, run_key), indent=2) + "\n")

    if state.is_completed() and isinstance(outcome, dict):
        print(outcome["answer"])
        if not args.quiet:
            totals = ledger.llm_totals(run_key)
            console.print(
                f"[green]completed[/] run {run_key} in {time.monotonic() - started:.1f}s · "
                f"{totals['calls']} model calls · {totals['prompt_tokens'] + totals['completion_tokens']} tokens",
                highlight=False,
            )
        return EXIT_COMPLETED
    if isinstance(outcome, UserInputError):
        return _fail(str(outcome), EXIT_BAD_INPUT)
    if isinstance(outcome, RunInProgressError):
        return _fail(str(outcome), EXIT_FAILED)
    if isinstance(outcome, PlanflowError):
        return _fail(f"{outcome} (run {run_key}; re-run with --run-key {run_key} to resume)", EXIT_FAILED)
    if isinstance(outcome, BaseException) and (lost := _lost_service(outcome, run_key)):
        return _fail(lost, EXIT_UNAVAILABLE)
    detail = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else state.name
    return _fail(
        f"run {run_key} ended {state.name}: {str(detail).splitlines()[0][:300]}; "
        f"the work done so far is kept: re-run with --run-key {run_key} to resume",
        EXIT_FAILED,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else ""


def _lost_service(exc: BaseException, run_key: str) -> str | None:
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
            return f"the ledger database is unavailable ({type(error.orig).__name__}: {_first_line(error.orig)}); {resume}"
        if isinstance(error, httpx.TransportError):
            return f"the Prefect API at {_prefect_api_url()} is unreachable ({type(error).__name__}: {_first_line(error)}); {resume}"
        error = error.__cause__ or error.__context__
    return None


def _prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "Prefect's temporary local server"


if __name__ == "__main__":
    sys.exit(main())
