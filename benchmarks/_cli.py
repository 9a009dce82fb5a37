"""Running `flows/run.py` as a subprocess: its own session (process group), output to
files, and the whole group SIGKILLed when done, whatever happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.common import REPO_ROOT

RUN_PY = REPO_ROOT / "flows" / "run.py"


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def start(args: list[str], env: Mapping[str, str], log_dir: Path, tag: str) -> subprocess.Popen[bytes]:
    """Start `python flows/run.py *args`; the caller must `finish()` it (kills its group)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{tag}.stdout", "wb") as out, open(log_dir / f"{tag}.stderr", "wb") as err:
        return subprocess.Popen(
            [sys.executable, str(RUN_PY), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            cwd=str(log_dir),
            start_new_session=True,
        )


def finish(proc: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of the process group and reap the CLI."""
    kill_group(proc.pid)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass


def run(args: list[str], env: Mapping[str, str], log_dir: Path, tag: str, timeout: float = 300) -> tuple[int, float, str, str]:
    """Run the CLI to the end: (exit code, seconds, stdout, stderr)."""
    t0 = time.monotonic()
    proc = start(args, env, log_dir, tag)
    try:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -9
        seconds = time.monotonic() - t0
    finally:
        finish(proc)
    return code, seconds, read(log_dir, tag, "stdout"), read(log_dir, tag, "stderr")


def read(log_dir: Path, tag: str, stream: str) -> str:
    return (log_dir / f"{tag}.{stream}").read_text(errors="replace")
