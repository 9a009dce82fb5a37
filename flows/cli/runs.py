"""`planflow runs ...`: the ledger's view of runs, and what a person does to one, without the Prefect UI.

Each subcommand is registered by a function that adds its parser and sets
`handler(args, ledger) -> exit code`; commands of their own weight live in
modules of their own (`flows/cli/runs_*.py`) and are listed in `SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.cli.common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, Unavailable, add_run_options, fail, open_ledger, quiet_prefect
from flows.cli.runs_cancel import add_cancel
from flows.cli.runs_rerun import add_rerun

__all__ = ["runs_main"]

Register = Callable[[Any], None]  # takes argparse's subparsers action


def runs_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        ledger = open_ledger()
    except Unavailable as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    # A run still marked running whose process is gone crashed: say so, once and for all.
    for run in ledger.stale_runs():
        ledger.mark_crashed(run.run_key, "its process died while running it (found by planflow runs)")
    return args.handler(args, ledger)


def known_run(ledger: Any, run_key: str) -> Any:
    """The ledger's run `run_key`, or None after printing the one-line error (the caller exits 2)."""
    run = ledger.run(run_key)
    if run is None:
        fail(f"no run {run_key!r} in the ledger (see: planflow runs list)", EXIT_BAD_INPUT)
    return run


def _add_list(commands: Any) -> None:
    listing = commands.add_parser("list", help="recent runs and their status")
    listing.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    listing.set_defaults(handler=_list)


def _list(args: argparse.Namespace, ledger: Any) -> int:
    table = Table(box=None, header_style="bold")
    for column in ("run key", "status", "plan", "tasks done", "started", "goal"):
        table.add_column(column)
    for run in ledger.runs(limit=args.limit):
        nodes = ledger.nodes(run.run_key)
        done = sum(n.status in ("completed", "cached") for n in nodes)
        table.add_row(
            run.run_key, _status(run), f"v{run.plan_version}", f"{done}/{len(nodes)}",
            run.started_at.strftime("%Y-%m-%d %H:%M"), run.goal[:50],
        )
    Console().print(table)
    return 0


def _status(run: Any, when: bool = False) -> str:
    """`cancelled by alice` (`... at 2025-01-02 10:11:12 UTC` with `when`); other statuses as they are."""
    if run.status != "cancelled":
        return run.status
    text = f"cancelled by {run.cancelled_by or 'someone'}"
    return text + (f" at {run.cancelled_at:%Y-%m-%d %H:%M:%S} UTC" if when and run.cancelled_at else "")


def _add_show(commands: Any) -> None:
    show = commands.add_parser("show", help="one run: plan versions, tasks, tokens")
    show.add_argument("run_key")
    show.add_argument("--json", action="store_true", help="print the JSON report instead")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace, ledger: Any) -> int:
    from planner.report import build_report

    run = known_run(ledger, args.run_key)
    if run is None:
        return EXIT_BAD_INPUT
    report = build_report(ledger, run.run_key)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = Console()
    console.print(f"[bold]{run.goal}[/]\nrun {run.run_key} · {_status(run, when=True)} · flow run {run.flow_run_id}")
    from flows.ui_links import recorded_run_link

    console.print(recorded_run_link(run.prefect_api_url, run.flow_run_id), markup=False, highlight=False, soft_wrap=True)
    for version in report["plan_versions"]:
        asked = f", asked by {version['requested_by']}" if version["requested_by"] else ""
        action = f" ({version['action']}{asked})" if version["action"] else ""
        console.print(f"plan v{version['version']}: {version['reason']}{action}", markup=False, highlight=False)
    table = Table(box=None, header_style="bold")
    for column in ("id", "status", "tries", "steps", "tools", "tokens", "result / error"):
        table.add_column(column)
    for task in report["tasks"]:
        text = (task["error"] if task["status"] in ("failed", "skipped", "cancelled") else task["result"]) or ""
        table.add_row(
            task["id"], task["status"], str(task["attempts"]), str(task["steps"]), str(len(task["tool_calls"])),
            str(task["prompt_tokens"] + task["completion_tokens"]), " ".join(str(text).split())[:70],
        )
    console.print(table)
    if any(task["tool_calls"] for task in report["tasks"]):
        console.print("\n[bold]tool calls[/]")
        for task in report["tasks"]:
            for call in task["tool_calls"]:
                # Arguments are the model's text: printed as they are, never as markup.
                console.print(_tool_call_line(task["id"], call), markup=False, highlight=False, soft_wrap=True)
    if report["decisions"]:
        console.print("\n[bold]decisions[/]")
        for decision in report["decisions"]:
            console.print(_decision_line(decision), markup=False, highlight=False, soft_wrap=True)
    if run.answer:
        console.print(f"\n[bold]answer[/]\n{run.answer}")
    llm = report["llm"]
    console.print(f"\n{llm['calls']} model calls · {llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens")
    return 0


def _decision_line(decision: dict[str, Any]) -> str:
    """`plan v1 approval: edit by alice at 2026-01-02 10:00:00 — added c`: one pause of `runs show`."""
    where = f"plan v{decision['plan_version']} {decision['kind']}"
    if decision["decided_at"] is None:
        return f"  {where}: waiting for a person since {_when(decision['asked_at'])} — {decision['question']}"
    detail = f" — {decision['detail']}" if decision["detail"] else ""
    return f"  {where}: {decision['action']} by {decision['decided_by']} at {_when(decision['decided_at'])}{detail}"


def _when(iso: str) -> str:
    return iso[:19].replace("T", " ")


def _tool_call_line(node_id: str, call: dict[str, Any]) -> str:
    """`t1  step 2  send_notice(team='ops')  ok  cached`: one tool call of `runs show`."""
    from planner.react import describe_call

    if call["error"] is not None:
        outcome = "error: " + " ".join(call["error"].split())[:60]
    elif call["finished_at"] is None:
        outcome = "did not finish" + ("" if call["idempotent"] else " (may or may not have happened)")
    else:
        outcome = "ok"
    line = f"  {node_id}  step {call['step']}  {describe_call(call['tool'], call['arguments'])}  {outcome}"
    return line + ("  cached" if call["cached"] else "")


def _add_resume(commands: Any) -> None:
    resume = commands.add_parser("resume", help="resume a run by key: finished tasks are replayed, not re-paid")
    resume.add_argument("run_key")
    add_run_options(resume)
    resume.set_defaults(handler=_resume)


def _resume(args: argparse.Namespace, ledger: Any) -> int:
    from flows.cli.goal import run_goal

    run = known_run(ledger, args.run_key)
    if run is None:
        return EXIT_BAD_INPUT
    quiet_prefect(args.verbose)
    return run_goal(ledger, run.goal, run.run_key, None, args)


def _add_answers(commands: Any) -> None:
    from flows.cli.runs_answer import add_answer_commands

    add_answer_commands(commands)


SUBCOMMANDS: tuple[Register, ...] = (_add_list, _add_show, _add_resume, add_cancel, add_rerun, _add_answers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="planflow runs", description="Runs recorded in the ledger, and what to do with them.")
    commands = parser.add_subparsers(dest="command", required=True)
    for register in SUBCOMMANDS:
        register(commands)
    return parser
