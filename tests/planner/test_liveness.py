"""Owner liveness against real processes: a zombie, a reused pid, another boot, a stale
heartbeat. Each child is a real `sleep`; nothing about the process table is faked."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psutil
import pytest

from planner.ledger import HEARTBEAT_STALE_AFTER, owner_is_alive, this_owner
from planner.liveness import Owner, boot_id, is_alive

NOW = datetime.now(timezone.utc)
FRESH = NOW - timedelta(seconds=1)
STALE = NOW - HEARTBEAT_STALE_AFTER - timedelta(seconds=1)
HOST = socket.gethostname()


@pytest.fixture
def child() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def owner_of(pid: int) -> Owner:
    """The owner record a process would have written for itself."""
    process = psutil.Process(pid)
    started = round(process.create_time() - psutil.boot_time(), 2)
    return Owner(host=HOST, pid=pid, started=started, boot=boot_id(), token="t0")


class TestOwnerString:
    def test_round_trips_and_starts_with_host_and_pid(self) -> None:
        owner = this_owner()
        assert owner.startswith(f"{HOST}:{os.getpid()}:")
        parsed = Owner.parse(owner)
        assert str(parsed) == owner
        assert (parsed.pid, parsed.boot) == (os.getpid(), boot_id())
        assert parsed.started is not None and parsed.started >= 0

    def test_the_old_format_is_read_with_unknown_identity(self) -> None:
        assert Owner.parse("h:12:abcd") == Owner("h", 12, None, None, "abcd")
        assert Owner.parse("h:12") == Owner("h", 12, None, None, "")

    @pytest.mark.parametrize("text", ["", "h", "h:x:tok", "h:1:2:3", "h:1:soon:b:t", ":1:t"])
    def test_rejects_what_is_not_an_owner(self, text: str) -> None:
        with pytest.raises(ValueError, match="not an owner"):
            Owner.parse(text)


class TestLocalOwner:
    def test_this_process_is_alive_even_with_a_stale_heartbeat(self) -> None:
        assert owner_is_alive(this_owner(), STALE, NOW)

    def test_a_live_child_with_its_start_time_is_alive(self, child: subprocess.Popen) -> None:
        assert is_alive(str(owner_of(child.pid)), FRESH, NOW)
        assert is_alive(str(owner_of(child.pid)), STALE, NOW)

    def test_the_same_pid_with_another_start_time_is_another_process(self, child: subprocess.Popen) -> None:
        owner = owner_of(child.pid)
        reused = dataclasses.replace(owner, started=owner.started - 100)
        assert not is_alive(str(reused), FRESH, NOW)

    def test_a_killed_unreaped_child_is_dead(self, child: subprocess.Popen) -> None:
        owner = str(owner_of(child.pid))
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # what the old check asked: the pid still "exists"
        assert not is_alive(owner, FRESH, NOW)

    def test_a_reaped_child_is_dead(self, child: subprocess.Popen) -> None:
        owner = str(owner_of(child.pid))
        child.kill()
        child.wait(timeout=10)
        assert not is_alive(owner, FRESH, NOW)

    def test_another_boot_is_dead(self, child: subprocess.Popen) -> None:
        rebooted = dataclasses.replace(owner_of(child.pid), boot="00000000" if boot_id() != "00000000" else "11111111")
        assert not is_alive(str(rebooted), FRESH, NOW)

    @pytest.mark.parametrize("pid", [1, os.getppid()], ids=["init", "parent"])
    def test_an_unrelated_live_pid_with_a_stale_heartbeat_is_dead(self, pid: int) -> None:
        earlier = dataclasses.replace(owner_of(pid), started=owner_of(pid).started - 50)  # a made-up older start
        assert not is_alive(str(earlier), STALE, NOW)
        assert not is_alive(f"{HOST}:{pid}:t0", STALE, NOW)  # old format: the pid proves nothing

    def test_the_old_format_with_a_live_pid_and_a_fresh_heartbeat_is_alive(self, child: subprocess.Popen) -> None:
        assert is_alive(f"{HOST}:{child.pid}:t0", FRESH, NOW)

    def test_no_owner_or_no_heartbeat(self) -> None:
        assert not is_alive(None, FRESH, NOW)
        assert not is_alive(f"{HOST}:1:t0", None, NOW)


class TestRemoteOwner:
    """Another host's processes cannot be inspected: the heartbeat alone decides."""

    OWNER = "some-other-host:4242:1234.56:deadbeef:t0"

    def test_a_fresh_heartbeat_is_alive(self) -> None:
        assert is_alive(self.OWNER, FRESH, NOW)
        assert is_alive(self.OWNER, FRESH.replace(tzinfo=None), NOW)  # SQLite returns naive UTC

    def test_a_stale_heartbeat_is_dead(self) -> None:
        assert not is_alive(self.OWNER, STALE, NOW)

    def test_an_unreadable_owner_is_judged_by_its_heartbeat(self) -> None:
        assert is_alive("garbage", FRESH, NOW)
        assert not is_alive("garbage", STALE, NOW)
