"""Shared plumbing: result files, statistics, machine facts, and the in-process Prefect."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import _env

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"


# -- statistics ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def describe(values: Sequence[float]) -> dict[str, float]:
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "median": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


# -- machine and results ------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "prefect_api": _env.external_prefect_api() or "temporary server (SQLite)",
    }
    for package in ("prefect", "openai", "xllamacpp"):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:  # noqa: BLE001 - informative only
            pass
    return info


class Result:
    """Collects one benchmark's figures and writes `<name>.json` (and the plot's path)."""

    def __init__(self, name: str, quick: bool, params: dict[str, Any]) -> None:
        self.name = name
        self.data: dict[str, Any] = {
            "benchmark": name,
            "quick": quick,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "params": params,
        }
        self._t0 = time.monotonic()

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        self.data["wall_seconds"] = round(time.monotonic() - self._t0, 2)
        self.data["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        path = out / f"{self.name}.json"
        path.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def unique_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the in-process Prefect ---------------------------------------------------------

_WARMUP: dict[str, Any] | None = None


def run_flow(goal: str, plan: dict[str, Any], run_key: str, max_parallel: int, base_url: str) -> dict[str, Any]:
    """Run the real `plan_and_execute` flow in this process against `base_url`; raise unless it completed."""
    from flows.plan_and_execute import plan_and_execute

    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "sk-bench"

    state = asyncio.run(
        plan_and_execute(goal=goal, run_key=run_key, plan=plan, max_parallel=max_parallel, return_state=True)
    )
    result = state.result(raise_on_failure=False)
    if not state.is_completed():
        raise RuntimeError(f"flow run {run_key} ended {state.name}: {result!r}")
    return result


def warm_prefect(base_url: str) -> dict[str, Any]:
    """Start Prefect's temporary API server (or reach `--prefect-api`) with a 1-node flow run (once per process).

    Returns the seconds it took: importing the flow, and the first run (server
    start-up, database migration on a fresh PREFECT_HOME, first-run imports).
    """
    global _WARMUP
    if _WARMUP is not None:
        return _WARMUP
    started = time.monotonic()
    import flows.plan_and_execute  # noqa: F401

    imported = time.monotonic()
    plan = {"tasks": [{"id": "t1", "description": "warm up", "depends_on": []}]}
    run_flow("warm up the orchestrator", plan, unique_key("warmup"), 1, base_url)
    first_run = time.monotonic() - imported
    _env.save_template_db()
    second = time.monotonic()
    run_flow("warm up the orchestrator", plan, unique_key("warmup"), 1, base_url)
    _WARMUP = {
        "import_flow_s": round(imported - started, 3),
        "first_run_s": round(first_run, 3),
        "second_run_s": round(time.monotonic() - second, 3),
        "fresh_prefect_home": not _env.seeded(),
    }
    log(f"Prefect warm: import {_WARMUP['import_flow_s']}s, first run {_WARMUP['first_run_s']}s, "
        f"second 1-node run {_WARMUP['second_run_s']}s")
    return _WARMUP


def prefect_server():
    """The temporary API server this process started (after `warm_prefect`)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.port is None:
        raise RuntimeError("Prefect's temporary server is not running: call warm_prefect() first")
    return server


def prefect_api_url() -> str:
    return _env.external_prefect_api() or prefect_server().api_url


def prefect_server_pid() -> int | None:
    """The Prefect server's process, to count its CPU: the temporary one, or the process
    listening on `--prefect-api`'s port (None if it is not on this machine)."""
    external = _env.external_prefect_api()
    if external:
        from urllib.parse import urlsplit

        return pid_listening_on(urlsplit(external).port or 80)
    server = prefect_server()
    proc = getattr(server, "server_process", None) or getattr(server, "_server_process", None)
    return getattr(proc, "pid", None)


def pid_listening_on(port: int) -> int | None:
    """The pid of the local process with a TCP socket listening on `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:  # gone, or not ours to read
            continue
    return None


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process from /proc (0.0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def snapshot_prefect_db(dest_home: Path) -> bool:
    """Copy this process's (migrated) Prefect database into another PREFECT_HOME.

    A fresh PREFECT_HOME costs a 20-50 s schema migration on the first run; a
    user pays it once per machine. Copying the migrated database (SQLite backup
    API: consistent even while the server runs) makes a subprocess start like a
    user's second-ever run. Returns False if there was nothing to copy.
    """
    source = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    if not source.exists():
        return False
    _env.copy_prefect_db(source, dest_home)
    return True


def subprocess_env(prefect_home: Path, *, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """This session's environment for a `flows/run.py` subprocess (no OPENAI_* unless given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    # Byte-code caching as an installed package has it: without it every CLI start recompiles
    # the project's modules (0.2-0.7 s of start-up that no user pays).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PREFECT_HOME"] = str(prefect_home)
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env
