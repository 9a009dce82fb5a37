"""`planflow runs ...`: the ledger's view of runs, for people without the Prefect UI open."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["runs_main"]


def _parser() -> argparse.ArgumentParser:
    from flows.run import add_run_options

    parser = argparse.ArgumentParser(prog="planflow runs", description="Runs recorded in the ledger.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="recent runs and their status")
    listing.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    show = commands.add_parser("show", help="one run: plan versions, tasks, tokens")
    show.add_argument("run_key")
    show.add_argument("--json", action="store_true", help="print the JSON report instead")
    resume = commands.add_parser("resume", help="resume a run by key: finished tasks are replayed, not re-paid")
    resume.add_argument("run_key")
    add_run_options(resume)
    return parser


def _status(run: Any, stale_keys: set[str]) -> str:
    if run.run_key in stale_keys:
        return "crashed (process gone)"
    return run.status


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


def runs_main(argv: list[str], *, run_goal: Callable[..., int]) -> int:
    from flows.run import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, _fail, _open_ledger, _quiet_prefect, _Unavailable
    from planner.report import build_report

    args = _parser().parse_args(argv)
    try:
        ledger = _open_ledger()
    except _Unavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    console = Console()
    # A run still marked running whose process is gone crashed: say so, once and for all.
    stale = {r.run_key for r in ledger.stale_runs()}
    for key in stale:
        ledger.mark_crashed(key, "its process died while running it (found by planflow runs)")

    if args.command == "list":
        table = Table(box=None, header_style="bold")
        for column in ("run key", "status", "plan", "tasks done", "started", "goal"):
            table.add_column(column)
        for run in ledger.runs(limit=args.limit):
            nodes = ledger.nodes(run.run_key)
            done = sum(n.status in ("completed", "cached") for n in nodes)
            table.add_row(
                run.run_key,
                _status(run, stale),
                f"v{run.plan_version}",
                f"{done}/{len(nodes)}",
                run.started_at.strftime("%Y-%m-%d %H:%M"),
                run.goal[:50],
            )
        console.print(table)
        return 0

    run = ledger.run(args.run_key)
    if run is None:
        return _fail(f"no run {args.run_key!r} in the ledger (see: planflow runs list)", EXIT_BAD_INPUT)

    if args.command == "show":
        report = build_report(ledger, run.run_key)
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        console.print(f"[bold]{run.goal}[/]\nrun {run.run_key} · {run.status} · flow run {run.flow_run_id}")
        for version in report["plan_versions"]:
            console.print(f"plan v{version['version']}: {version['reason']}" + (f" ({version['action']})" if version["action"] else ""))
        table = Table(box=None, header_style="bold")
        for column in ("id", "status", "tries", "steps", "tools", "tokens", "result / error"):
            table.add_column(column)
        for task in report["tasks"]:
            text = (task["error"] if task["status"] in ("failed", "skipped") else task["result"]) or ""
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
        if run.answer:
            console.print(f"\n[bold]answer[/]\n{run.answer}")
        llm = report["llm"]
        console.print(f"\n{llm['calls']} model calls · {llm['prompt_tokens']} prompt + {llm['completion_tokens']} completion tokens")
        return 0

    _quiet_prefect(args.verbose)
    return run_goal(ledger, run.goal, run.run_key, None, args)


