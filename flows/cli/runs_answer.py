"""`planflow runs approve|edit|abort|hint KEY ...`: answer a run paused for a person, from a terminal.

A run started with `--approve-plan` pauses before any task runs; one with
`--on-exhausted ask` pauses when a task fails and no replan is left (flows/human.py).
These commands find the run in the ledger, check on the Prefect API its flow run
lives on (the ledger's `prefect_api_url`) that it is paused and what for, and answer
through Prefect's run input with the keys the UI's form sends, plus `decided_by`
(this user's name), so the run records who decided. While a run waits, the CLI
that runs it prints these commands with its run key filled in (`pause_notice`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import shlex
import time
from pathlib import Path
from typing import Any

from flows.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    Unavailable,
    credentials_for,
    fail,
    first_line,
    quiet_prefect,
)

__all__ = ["add_answer_commands", "pause_notice"]

PAUSE_SETTLE_SECONDS = 15.0
"""How long a command waits for a flow run the ledger says is pausing to be Paused in
Prefect (the ledger records the pause a moment before Prefect does)."""

_COMMAND_LINES = {
    "approve": ("planflow runs approve {key}", "run the plan as it is"),
    "edit": ("planflow runs edit {key} plan.json", "run this plan instead (checked first)"),
    "abort": ("planflow runs abort {key} --reason TEXT", "stop the run"),
    "hint": ("planflow runs hint {key} TEXT", "ask the replanner once more, with your hint"),
}


class NotPaused(Exception):
    """The run is not waiting for a person (its message says what it is doing instead)."""


def add_answer_commands(commands: Any) -> None:
    """Register `approve`, `edit`, `abort` and `hint` under `planflow runs`."""
    approve = commands.add_parser("approve", help="approve the plan of a run paused by --approve-plan")
    approve.add_argument("run_key")
    approve.set_defaults(handler=_answer, command="approve")

    edit = commands.add_parser("edit", help="give a paused run the plan to run instead (checked like --plan)")
    edit.add_argument("run_key")
    edit.add_argument("plan_file", type=Path, metavar="plan.json", help='the plan JSON {"tasks": [...]}')
    edit.set_defaults(handler=_answer, command="edit")

    abort = commands.add_parser("abort", help="stop a paused run; the work done so far is kept")
    abort.add_argument("run_key")
    abort.add_argument("--reason", default="", metavar="TEXT", help="why (it becomes the run's error)")
    abort.set_defaults(handler=_answer, command="abort")

    hint = commands.add_parser("hint", help="a run paused by --on-exhausted ask: replan once more with this hint")
    hint.add_argument("run_key")
    hint.add_argument("text", help="the hint for the replanner")
    hint.set_defaults(handler=_answer, command="hint")


def pause_notice(run: Any, pause: Any) -> str:
    """What the CLI prints once when its run pauses: what it waits for, the UI link
    (if the run's API has a UI) and the commands that answer it."""
    from flows.human import ANSWERS
    from prefect.utilities.urls import url_for

    key = shlex.quote(run.run_key)
    lines = [f"⏸  run {run.run_key} is paused for a person: {pause.question}"]
    link = url_for("flow-run", obj_id=run.flow_run_id) if run.flow_run_id else None
    if link:  # a Prefect server; the temporary local one has no UI
        lines.append(f"   answer in the Prefect UI: {link}")
    lines.append("   answer from a terminal:")
    commands = [_COMMAND_LINES[c] for c in ANSWERS[pause.kind]]
    width = max(len(c.format(key=key)) for c, _ in commands)
    lines += [f"     {c.format(key=key):<{width}}   {help}" for c, help in commands]
    return "\n".join(lines)


def _answer(args: argparse.Namespace, ledger: Any) -> int:
    quiet_prefect(verbose=False)
    from planner.errors import UserInputError

    from flows.cli.goal import load_plan
    from flows.cli.runs import known_run
    from flows.human import ANSWERS, answer_input

    run = known_run(ledger, args.run_key)
    if run is None:
        return EXIT_BAD_INPUT
    text = {"edit": "", "abort": getattr(args, "reason", ""), "hint": getattr(args, "text", "")}.get(args.command, "")
    if args.command == "edit":  # checked before anything is sent: a bad file leaves the run paused
        try:
            plan = load_plan(args.plan_file)
        except UserInputError as exc:
            return fail(f"{exc}; run {run.run_key} is still paused", EXIT_BAD_INPUT)
        text = json.dumps(plan)
    try:
        with _client(run.prefect_api_url) as client:
            kind, state = _paused(client, ledger, run)
            if args.command not in ANSWERS[kind]:
                fits = ", ".join(f"planflow runs {c}" for c in ANSWERS[kind])
                return fail(
                    f"run {run.run_key} waits for {_waits_for(ledger, run, kind)}; "
                    f"'{args.command}' does not answer that (use: {fits})",
                    EXIT_BAD_INPUT,
                )
            who = _user()
            answer = answer_input(kind, args.command, text, decided_by=who)
            result = client.resume_flow_run(run.flow_run_id, run_input=answer)
    except NotPaused as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except Unavailable as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)
    if result.status.value != "ACCEPT":
        reason = getattr(result.details, "reason", None) or result.status.value
        return fail(f"Prefect did not take the answer for run {run.run_key}: {reason}", EXIT_BAD_INPUT)
    print(_done(args.command, run.run_key, text, state, who))
    return 0


def _client(api_url: str | None) -> Any:
    """A client of the API the run's flow run lives on. Credentials from this process's
    settings go only to that same API, never to another URL the ledger names."""
    from prefect.client.orchestration import SyncPrefectClient

    if not api_url:
        raise NotPaused("the ledger has no Prefect API for this run (it never started a flow run here)")
    return _Checked(SyncPrefectClient(api_url, **credentials_for(api_url)), api_url)


class _Checked:
    """A client whose lost connection, or missing flow run, is one `Unavailable` line."""

    def __init__(self, client: Any, api_url: str) -> None:
        self._client, self._url = client, api_url

    def __enter__(self) -> _Checked:
        self._call(self._client.__enter__)
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    def read_flow_run(self, flow_run_id: str) -> Any:
        return self._call(self._client.read_flow_run, flow_run_id)

    def resume_flow_run(self, flow_run_id: str, run_input: dict[str, Any]) -> Any:
        return self._call(self._client.resume_flow_run, flow_run_id, run_input=run_input)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx
        from prefect.exceptions import ObjectNotFound

        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"the Prefect API at {self._url}, where the run's flow run lives, is unreachable "
                f"({type(exc).__name__}: {first_line(exc)})"
            ) from None
        except ObjectNotFound:
            raise Unavailable(
                f"the Prefect API at {self._url} has no flow run {args[0]} (a different server now?)"
            ) from None
        except httpx.HTTPStatusError as exc:
            raise Unavailable(
                f"the Prefect API at {self._url} refused the request (HTTP {exc.response.status_code})"
            ) from None


def _paused(client: _Checked, ledger: Any, run: Any) -> tuple[str, Any]:
    """(kind, Prefect state) of the pause the run waits in; `NotPaused` if it waits in none."""
    from flows.human import pause_kind

    if run.status != "running":
        raise NotPaused(f"run {run.run_key} is not paused: it {_ENDED.get(run.status, 'is ' + run.status)}")
    deadline = time.monotonic() + PAUSE_SETTLE_SECONDS
    while True:
        state = client.read_flow_run(run.flow_run_id).state
        if state is not None and state.is_paused():
            kind = pause_kind(state.state_details.pause_key)
            if kind is None:
                key = state.state_details.pause_key
                raise NotPaused(f"run {run.run_key} is paused, but not by Planflow (pause {key!r})")
            return kind, state
        # The ledger records a pause a moment before Prefect's state says Paused.
        if ledger.open_pause(run.run_key) is None or time.monotonic() > deadline:
            name = state.name if state is not None else "unknown"
            raise NotPaused(f"run {run.run_key} is not paused: its flow run is {name}")
        time.sleep(0.5)


_ENDED = {"completed": "completed", "failed": "failed", "crashed": "crashed (its process died)"}


def _waits_for(ledger: Any, run: Any, kind: str) -> str:
    pause = ledger.open_pause(run.run_key)
    if pause is not None:
        return "a person to " + pause.question if kind == "approval" else "a decision: " + pause.question
    return "approval of its plan" if kind == "approval" else "a decision about a failed task"


def _user() -> str:
    """Who decides: this user's login name."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in the environment or the password database
        return "cli"


def _done(command: str, run_key: str, text: str, state: Any, who: str) -> str:
    """The one line a command prints about what it did."""
    if command == "approve":
        version = (state.state_details.pause_key or "").rsplit("-v", 1)[-1]
        what = f"approved plan v{version} of run {run_key}"
    elif command == "edit":
        what = f"sent an edited plan ({len(json.loads(text)['tasks'])} tasks) to run {run_key}"
    elif command == "abort":
        what = f"aborted run {run_key}" + (f": {text}" if text else "")
    else:
        what = f"sent your hint to run {run_key}'s replanner"
    return f"{what} (decided by {who}); the run takes it up at its next check"
