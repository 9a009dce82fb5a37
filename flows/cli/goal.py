"""`planflow GOAL`: plan a goal, run it durably with a live view, print the answer."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    Unavailable,
    add_run_options,
    fail,
    first_line,
    lost_service,
    open_ledger,
    quiet_prefect,
)

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
  PREFECT_API_URL                   run against this Prefect server (default: the local one, below)
  PLANFLOW_SERVER                   'local' (default): start once and reuse a local Prefect server
                                    whose UI keeps every run viewable; 'temporary': a temporary
                                    server that stops with the command
  PLANFLOW_SERVER_PORT              the local server's port (default 4200 if free)

the local Prefect server (API + UI on 127.0.0.1; a run starts it on first use and says so):
  planflow server status            up or down, URL, pid, uptime, database
  planflow server stop              stop it (runs started afterwards start it again)

runs (the ledger, for people without the Prefect UI open):
  planflow runs list                list recent runs and their status
  planflow runs show KEY [--json]   one run: plan versions, tasks, tokens (--json: the report)
  planflow runs resume KEY          resume a run by key (same as GOAL --run-key KEY)
  planflow runs cancel KEY          cancel a running run (finished tasks are kept; resume later)
  planflow runs rerun KEY --from T  run task T and everything downstream again; the rest replays
  planflow runs approve KEY         a run paused for a person (--approve-plan): run its plan
  planflow runs edit KEY plan.json  a paused run: run this plan instead (checked like --plan)
  planflow runs abort KEY --reason TEXT
                                    a paused run: stop it (the work done so far is kept)
  planflow runs hint KEY TEXT       a run paused by --on-exhausted ask: replan once more, with a hint
  planflow --resume FLOW_RUN_ID     resume the run that flow run belongs to
  planflow runs --help              every runs command

exit codes: 0 completed · 1 run failed · 2 bad input · 3 a service (ledger, Prefect API)
unavailable · 130 interrupted or cancelled. Re-running with the same --run-key resumes: finished tasks
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


def load_plan(path: Path) -> dict[str, Any]:
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


def goal_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    quiet_prefect(args.verbose)

    from planner.errors import UserInputError
    from planner.run_keys import default_run_key, fresh_run_key, normalise_goal

    try:
        ledger = open_ledger()
    except Unavailable as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    run_key = args.run_key
    goal_text = args.goal
    if args.resume:
        run = ledger.run_by_flow_run(args.resume)
        if run is None:
            return fail(f"no run in the ledger has flow run {args.resume!r} (see: planflow runs list)", EXIT_BAD_INPUT)
        run_key, goal_text = run.run_key, goal_text or run.goal
    try:
        goal = normalise_goal(goal_text or "")
        plan = load_plan(args.plan) if args.plan else None
        if args.tools:  # a module that cannot load is the user's to fix: say so before Prefect starts
            from planner.tools import load_tools_from

            load_tools_from(args.tools)
    except UserInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    run_key = run_key or (fresh_run_key(goal) if args.fresh else default_run_key(goal))
    return run_goal(ledger, goal, run_key, plan, args)


def run_goal(
    ledger: Any, goal: str, run_key: str, plan: dict[str, Any] | None, args: argparse.Namespace, **flow_options: Any
) -> int:
    """Run (or resume) one goal under `run_key`, with the live view; return the exit code.

    `args` carries the run options (`add_run_options`); `flow_options` are further
    parameters of the flow, for the commands that need them.
    """
    import asyncio
    import sys

    from flows.cli.server import choose_prefect_api, started_notice
    from flows.local_server import LocalServerError
    from planner.settings import PlanflowSettings

    started = time.monotonic()
    settings = PlanflowSettings()
    try:
        api = choose_prefect_api(settings)  # before Prefect is imported; its start overlaps the imports below
    except LocalServerError as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    if api.started:  # said even with --quiet: something keeps running after this command
        print(started_notice(api), file=sys.stderr, flush=True)

    from rich.console import Console

    from flows.cli.runs_answer import pause_notice
    from flows.display import LiveRunView
    from flows.plan_and_execute import plan_and_execute
    from flows.ui_links import RunLinks
    from planner.errors import PlanflowError, RunInProgressError, UserInputError
    from planner.report import build_report

    console = Console(stderr=True)
    since = datetime.now(timezone.utc)
    links = RunLinks(console, api.kind, enabled=not args.quiet)
    # With --quiet the view draws nothing, but a pause for a person is still told: the run waits on the reader.
    view = LiveRunView(ledger, run_key, console, pause_notice=pause_notice, progress=not args.quiet)
    note = ""
    if not args.quiet and settings.uses_embedded_model and args.model in (None, "embedded"):
        note = f"starting the embedded model and planning {run_key} …"
    try:
        view.note = (
            "starting the local Prefect server (its first start sets up a database: up to a minute) …"
            if api.started
            else note
        )
        view.__enter__()
        try:
            try:
                api.wait()
            except LocalServerError as exc:
                return fail(str(exc), EXIT_UNAVAILABLE)
            view.note = note
            _start_temporary_server_apart_from_ctrl_c()
            state = asyncio.run(
                _json_parameters(links.announcing(plan_and_execute))(
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
                    **flow_options,
                )
            )
        finally:
            view.__exit__(None, None, None)
    except KeyboardInterrupt:  # before the run could take it as a cancel, or a second Ctrl-C
        record = _recorded(ledger, run_key)
        if (cancelled := _cancelled_message(record, run_key, since)) is not None:
            return fail(cancelled, EXIT_INTERRUPTED)
        resume = f"planflow runs resume {run_key}" if record is not None else f"--run-key {run_key}"
        return fail(f"interrupted; resume with {resume}", EXIT_INTERRUPTED)
    except Exception as exc:  # Prefect could not start the flow run, or lost its API during it
        if (cancelled := _cancelled_message(_recorded(ledger, run_key), run_key, since)) is not None:
            return fail(cancelled, EXIT_INTERRUPTED)  # a Ctrl-C stops Prefect's temporary server too
        lost = lost_service(exc, run_key)
        return fail(lost or f"could not run the flow: {type(exc).__name__}: {first_line(exc)}", EXIT_UNAVAILABLE)

    record = _recorded(ledger, run_key)  # read once: the link, the report and a cancel all need it
    links.at_end(record)
    outcome = state.result(raise_on_failure=False) if state.is_completed() or state.is_failed() else None
    if args.report and record is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(build_report(ledger, run_key), indent=2) + "\n")
    if (cancelled := _cancelled_message(record, run_key, since)) is not None:
        return fail(cancelled, EXIT_INTERRUPTED)

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
        return fail(str(outcome), EXIT_BAD_INPUT)
    if isinstance(outcome, RunInProgressError):
        return fail(str(outcome), EXIT_FAILED)
    if isinstance(outcome, PlanflowError):
        return fail(f"{outcome} (run {run_key}; re-run with --run-key {run_key} to resume)", EXIT_FAILED)
    if isinstance(outcome, BaseException) and (lost := lost_service(outcome, run_key)):
        return fail(lost, EXIT_UNAVAILABLE)
    detail = f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else state.name
    return fail(
        f"run {run_key} ended {state.name}: {str(detail).splitlines()[0][:300]}; "
        f"the work done so far is kept: re-run with --run-key {run_key} to resume",
        EXIT_FAILED,
    )


def _recorded(ledger: Any, run_key: str) -> Any:
    """The ledger's record of the run, or None, also when the ledger cannot be read: a run
    that lost its ledger ends with the one line that says so, not with a traceback here."""
    try:
        return ledger.run(run_key)
    except Exception:
        return None


def _cancelled_message(run: Any, run_key: str, since: datetime) -> str | None:
    """`run KEY cancelled by WHO; ... resume with ...` if the ledger's record `run` says it was cancelled `since` then."""
    if run is None or run.status != "cancelled" or run.finished_at is None:
        return None
    ended = run.finished_at if run.finished_at.tzinfo else run.finished_at.replace(tzinfo=timezone.utc)
    if ended < since:
        return None
    return (
        f"run {run_key} cancelled by {run.cancelled_by or 'someone'}; the work done so far is kept: "
        f"resume with planflow runs resume {run_key}"
    )


def _start_temporary_server_apart_from_ctrl_c() -> None:
    """Start Prefect's temporary local server (when no PREFECT_API_URL is set) with SIGINT
    blocked, as Prefect would have started it a moment later.

    A terminal's Ctrl-C reaches every process of its foreground group; the server would
    stop at once, and the run could neither end its flow run Cancelled nor finish quickly
    (Prefect's client retries a lost server for a minute). The blocked mask is inherited;
    Prefect still stops the server with SIGTERM when the CLI exits.
    """
    import signal

    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _json_parameters(flow: Any) -> Any:
    """A copy of `flow` whose parameters reach the API as they are when they are plain JSON.

    Prefect passes each through FastAPI's `jsonable_encoder`: importing FastAPI for it
    cost 0.1-0.4 s of CPU before the first model call (1 s of wall time on a loaded
    2-core machine), and Planflow's
    parameters (strings, numbers, lists, a plan dict) are JSON already. Anything
    else still goes Prefect's way.
    """
    flow = flow.with_options()
    prefect_way = flow.serialize_parameters

    def serialize_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(parameters))
        except (TypeError, ValueError):
            return prefect_way(parameters)

    flow.serialize_parameters = serialize_parameters
    return flow
