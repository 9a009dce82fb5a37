"""Process environment for a benchmark session, fixed before anything imports Prefect.

Prefect reads its settings when it is imported, so `prepare()` must run first
(`python -m benchmarks` calls it before importing any benchmark module). Every
session gets throwaway PREFECT_HOME / PLANFLOW_HOME directories: a benchmark
never touches the user's ~/.prefect or ~/.planflow.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

_SESSION: Path | None = None
_SEEDED = False
_PREFECT_API: str | None = None


def prepare(prefect_db: Path | None = None, prefect_api: str | None = None) -> Path:
    """Create the session directory and point Prefect and Planflow at it (idempotent).

    `prefect_db`: start from a copy of this already-migrated Prefect database, not
    an empty one (a fresh one costs a 20-50 s schema migration on the first run);
    by default the copy an earlier session kept (`template_db`), if there is one.
    `prefect_api`: run the in-process flows (and resume's CLI runs) against this
    running Prefect API, e.g. a Postgres-backed `prefect server start`, instead of
    a temporary server on SQLite. Start-up's default runs still use their own.
    """
    global _SESSION, _SEEDED, _PREFECT_API
    if _SESSION is not None:
        return _SESSION
    if "prefect" in __import__("sys").modules:
        raise RuntimeError("benchmarks._env.prepare() must run before prefect is imported")
    _SESSION = Path(tempfile.mkdtemp(prefix="planflow-bench-"))
    prefect_db = prefect_db or (template_db() if template_db().is_file() else None)
    if prefect_db is not None and prefect_db.is_file():
        copy_prefect_db(prefect_db, _SESSION / "prefect")
        _SEEDED = True
    # PLANFLOW_BENCHDATA only names the plan data to read (benchmarks/data.py), not a setting.
    for var in [v for v in os.environ if v.startswith(("OPENAI_", "PLANFLOW_", "PREFECT_"))]:
        if var != "PLANFLOW_BENCHDATA":
            del os.environ[var]
    os.environ.update(
        {
            "PREFECT_HOME": str(_SESSION / "prefect"),
            "PLANFLOW_HOME": str(_SESSION / "planflow"),
            # CLI runs use Prefect's temporary server unless a benchmark starts the local one
            # (startup's warm-server case), so no benchmark leaves a server running.
            "PLANFLOW_SERVER": "temporary",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
            # Prefect's temporary server migrates a fresh database first: 20-50 s on a
            # loaded 2-core machine, beyond Prefect's default 20 s start-up timeout.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
    )
    if prefect_api:
        _PREFECT_API = prefect_api.rstrip("/")
        os.environ["PREFECT_API_URL"] = _PREFECT_API
    return _SESSION


def external_prefect_api() -> str | None:
    """The running Prefect API given to `prepare`, if any."""
    return _PREFECT_API


def copy_prefect_db(source: Path, dest_home: Path, name: str = "prefect.db") -> None:
    """Copy a Prefect SQLite database into `dest_home` (the backup API: consistent even
    while a server writes to it)."""
    dest_home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(dest_home / name) as dst:
        src.backup(dst)


def template_db() -> Path:
    """Where a session keeps a copy of its freshly migrated Prefect database (holding
    only the warm-up run), for later sessions on this machine to start from."""
    from importlib.metadata import version

    return Path(__file__).resolve().parents[1] / ".planflow" / "bench" / f"prefect-{version('prefect')}.db"


def save_template_db() -> None:
    """After the session's first flow run migrated its fresh database: keep a copy."""
    source = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    if _SEEDED or _PREFECT_API or not source.is_file() or template_db().is_file():
        return
    partial = template_db().with_suffix(".partial")
    copy_prefect_db(source, partial.parent, partial.name)
    partial.replace(template_db())


def seeded() -> bool:
    """True if the session's Prefect database started as a copy (see `prepare`)."""
    return _SEEDED


def session_dir() -> Path:
    if _SESSION is None:
        raise RuntimeError("benchmarks._env.prepare() was not called")
    return _SESSION


def cleanup() -> None:
    if _SESSION is not None:
        shutil.rmtree(_SESSION, ignore_errors=True)
