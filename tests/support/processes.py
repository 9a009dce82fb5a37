"""Process groups a test started: which members are left (read from /proc), and killing them."""

from __future__ import annotations

import os
import signal


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group `pgid`; nothing if it is gone or not ours."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[tuple[int, str, str]]:
    """Live (non-zombie) processes whose process group is `pgid`: (pid, state, command)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append((int(entry), state, cmdline))
    return members
