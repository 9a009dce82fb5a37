"""Who owns a run, and whether that owner is still alive.

A run key has one live owner at a time. The owner string names the process
exactly, so that a later process can tell "still running" from "dead" without
guessing:

    host:pid:start:boot:token      e.g.  build-7:41233:52311.27:083e06d8:9f1c2a7e

- `start`: the process's start time in seconds after boot. A pid is only a name
  for a while; pid plus start time is one process for ever. Kept relative to boot
  because psutil's epoch `create_time()` adds `/proc/stat`'s btime, which moves
  when the wall clock is stepped; the difference of the two does not.
- `boot`: the kernel's boot id (the first 8 hex digits of
  `/proc/sys/kernel/random/boot_id`), or `t<boot time>` where that does not exist.
  After a reboot every process of the old boot is dead.
- `token`: tells two runs of one process apart.

The old format `host:pid:token` (and `host:pid`) is still read: its start time is
unknown, so the pid alone can never confirm that the owner lives.

How `is_alive` decides, for an owner on this host:
1. a different boot id: dead;
2. no such pid, or a zombie (killed but not yet reaped by its parent): dead;
3. a start time that differs from the recorded one: another process, so dead;
4. the same start time: alive, whatever the heartbeat says;
5. identity unknown (old format, or the process cannot be inspected): the heartbeat
   decides, as it does for an owner on another host: fresh is alive, stale is dead.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

__all__ = ["HEARTBEAT_STALE_AFTER", "Owner", "boot_id", "is_alive"]

HEARTBEAT_STALE_AFTER = timedelta(seconds=30)
"""A running run whose owner has not beaten for this long is presumed dead
(the owner beats every 5 s; see `flows.runtime.Heartbeat`)."""

START_TIME_TOLERANCE = 0.05
"""Seconds: start times are in clock ticks (1/100 s); this only absorbs float rounding."""

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
BOOT_TIME_TOLERANCE = 2.0
"""Seconds, for the `t<boot time>` fallback only: the kernel recomputes boot time
from the wall clock, so two readings in one boot can differ by a second."""


def boot_id() -> str:
    """This boot's id: 8 hex digits of the kernel's boot id, else `t` + the boot time."""
    try:
        return BOOT_ID_PATH.read_text().strip().replace("-", "")[:8]
    except OSError:
        return f"t{int(psutil.boot_time())}"


def _started(process: psutil.Process) -> float:
    """The process's start time, in seconds after boot (see the module docstring)."""
    return round(process.create_time() - psutil.boot_time(), 2)


def _same_boot(a: str, b: str) -> bool:
    if a == b:
        return True
    if a.startswith("t") and b.startswith("t"):
        try:
            return abs(int(a[1:]) - int(b[1:])) <= BOOT_TIME_TOLERANCE
        except ValueError:
            return False
    return False


@dataclass(frozen=True)
class Owner:
    """One process executing a run. `started` and `boot` are None when unknown
    (an owner written by an older Planflow)."""

    host: str
    pid: int
    started: float | None
    boot: str | None
    token: str

    @classmethod
    def current(cls) -> Owner:
        """This process, with a fresh token."""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=_started(psutil.Process()),
            boot=boot_id(),
            token=uuid.uuid4().hex[:8],
        )

    @classmethod
    def of_process(cls, pid: int, token: str = "") -> Owner:
        """Another process of this host (e.g. a server this one started), named as exactly."""
        return cls(host=socket.gethostname(), pid=pid, started=_started(psutil.Process(pid)), boot=boot_id(), token=token)

    @classmethod
    def parse(cls, text: str) -> Owner:
        """Read `host:pid:start:boot:token`, or the older `host:pid:token` / `host:pid`."""
        parts = text.split(":")
        if len(parts) == 5:
            host, pid, started, boot, token = parts
        elif len(parts) in (2, 3):
            host, pid, token, started, boot = *parts[:2], (parts[2] if len(parts) == 3 else ""), "", ""
        else:
            raise ValueError(f"not an owner: {text!r} (expected host:pid:start:boot:token)")
        if not host or not pid.isdigit():
            raise ValueError(f"not an owner: {text!r} (expected a host and a numeric pid first)")
        try:
            start = float(started) if started else None
        except ValueError:
            raise ValueError(f"not an owner: {text!r} (start time {started!r} is not a number)") from None
        return cls(host=host, pid=int(pid), started=start, boot=boot or None, token=token)

    def __str__(self) -> str:
        started = "" if self.started is None else f"{self.started:.2f}"
        return f"{self.host}:{self.pid}:{started}:{self.boot or ''}:{self.token}"


def _local_verdict(owner: Owner) -> bool | None:
    """For an owner on this host: True (it is that very process), False (dead), or
    None (a live pid whose identity cannot be confirmed)."""
    if owner.boot is not None and not _same_boot(owner.boot, boot_id()):
        return False
    try:
        process = psutil.Process(owner.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if owner.started is None:
            return None
        return abs(_started(process) - owner.started) <= START_TIME_TOLERANCE
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return False
    except psutil.AccessDenied:
        return None


def is_alive(owner: str | None, heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    """True if `owner` may still be executing its run (see the module docstring).

    No heartbeat counts as a stale one; an owner string that cannot be read is
    judged by its heartbeat alone.
    """
    if not owner:
        return False
    try:
        parsed: Owner | None = Owner.parse(owner)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.host == socket.gethostname():
        verdict = _local_verdict(parsed)
        if verdict is not None:
            return verdict
    if heartbeat_at is None:
        return False
    beat = heartbeat_at if heartbeat_at.tzinfo else heartbeat_at.replace(tzinfo=timezone.utc)
    return (now or datetime.now(timezone.utc)) - beat < HEARTBEAT_STALE_AFTER
