"""The CLI's live view of a run, drawn from the ledger (so it shows resumed and
cached work exactly as the report will). When the run pauses for a person, the
view prints what it waits for once per pause, above the table."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from planner.ledger import DecisionRecord, Ledger, NodeRecord, RunRecord

__all__ = ["LiveRunView", "render_run"]

_STATUS_STYLE = {
    "pending": ("·", "dim"),
    "running": ("▶", "yellow"),
    "completed": ("✔", "green"),
    "cached": ("↺", "cyan"),
    "failed": ("✘", "red"),
    "skipped": ("–", "dim"),
    "cancelled": ("⊘", "magenta"),
}


def _node_row(node: NodeRecord) -> list[Text | str]:
    mark, style = _STATUS_STYLE.get(node.status, ("?", ""))
    description = " ".join(node.description.split())
    tokens = node.prompt_tokens + node.completion_tokens
    return [
        Text(node.node_id, style="bold"),
        description if len(description) <= 60 else description[:59] + "…",
        ", ".join(json.loads(node.depends_on_json)) or "—",
        Text(f"{mark} {node.status}", style=style),
        str(node.attempts or ""),
        str(tokens or ""),
    ]


def render_run(ledger: Ledger, run_key: str, started: float, note: str = "") -> Group | Spinner:
    run = ledger.run(run_key)
    nodes = ledger.nodes(run_key)
    if run is None or not nodes:
        return Spinner("dots", text=Text(note or f"planning {run_key} …"))
    totals = ledger.llm_totals(run_key)
    done = sum(n.status in ("completed", "cached") for n in nodes)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "task", "depends on", "state", "tries", "tokens"):
        table.add_column(column, justify="right" if column in ("tries", "tokens") else "left")
    for node in nodes:
        table.add_row(*_node_row(node))
    header = Text.assemble(
        (f"{run.goal[:80]}\n", "bold"),
        (f"run {run_key} · plan v{run.plan_version} · {done}/{len(nodes)} done · ", "dim"),
        (f"{totals['calls']} model calls · {totals['prompt_tokens'] + totals['completion_tokens']} tokens · ", "dim"),
        (f"{time.monotonic() - started:.1f}s", "dim"),
    )
    return Group(header, table)


PauseNotice = Callable[[RunRecord, DecisionRecord], str]
"""What to print when the run pauses for a person (the CLI's answer commands)."""


class LiveRunView:
    """Redraws the run a few times a second on stderr until stopped.

    With `pause_notice`, a pause of the run is told once (`progress=False`: only
    that, for `--quiet`, since a paused run waits on the reader).
    """

    def __init__(
        self,
        ledger: Ledger,
        run_key: str,
        console: Console,
        interval: float = 0.25,
        *,
        pause_notice: PauseNotice | None = None,
        progress: bool = True,
    ) -> None:
        self._ledger, self._run_key, self._console = ledger, run_key, console
        self._interval = interval
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="planflow-display", daemon=True)
        self._pause_notice, self._progress = pause_notice, progress
        self._told = self._open_pause_id()  # one left open by an earlier, killed process is not this run's
        self.note = ""

    def _open_pause_id(self) -> int | None:
        try:
            pause = self._ledger.open_pause(self._run_key)
        except Exception:  # the display must never take a run down
            return None
        return pause.id if pause is not None else None

    def _pause_to_tell(self) -> str | None:
        """The notice of a pause not told yet, if the run waits in one."""
        if self._pause_notice is None:
            return None
        try:
            pause = self._ledger.open_pause(self._run_key)
            run = self._ledger.run(self._run_key)
            if pause is None or pause.id == self._told or run is None:
                return None
            self._told = pause.id
            return self._pause_notice(run, pause)
        except Exception:
            return None

    def _render(self) -> Group | Spinner:
        try:
            return render_run(self._ledger, self._run_key, self._started, self.note)
        except Exception:  # the display must never take a run down (e.g. a locked DB)
            return Spinner("dots", text=Text(f"running {self._run_key} …"))

    def _tell(self, console: Console) -> None:
        if (notice := self._pause_to_tell()) is not None:
            console.print(notice, markup=False, highlight=False, soft_wrap=True)

    def _loop(self) -> None:
        if not self._progress:
            while not self._stop.wait(self._interval):
                self._tell(self._console)
            return
        with Live(self._render(), console=self._console, refresh_per_second=8, transient=False) as live:
            while not self._stop.wait(self._interval):
                self._tell(live.console)
                live.update(self._render())
        if not self._console.is_terminal:  # rich ends the last line only on a terminal
            self._console.line()
            live.update(self._render())

    def __enter__(self) -> LiveRunView:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
