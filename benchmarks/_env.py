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


def prepare(prefect_db: Path | None = None) -> Path:
    """Create the session directory and point Prefect and Planflow at it (idempotent).

    `prefect_db`: start from a copy of this already-migrated Prefect database, not
    an empty one (a fresh one costs a 20-50 s schema migration on the first run).
    """
    global _SESSION, _SEEDED
    if _SESSION is not None:
        return _SESSION
    if "prefect" in __import__("sys").modules:
        raise RuntimeError("benchmarks._env.prepare() must run before prefect is imported")
    _SESSION = Path(tempfile.mkdtemp(prefix="planflow-bench-"))
    if prefect_db is not None and prefect_db.is_file():
        copy_prefect_db(prefect_db, _SESSION / "prefect")
        _SEEDED = True
    for var in [v for v in os.environ if v.startswith(("OPENAI_", "PLANFLOW_", "PREFECT_"))]:
        del os.environ[var]
    os.environ.update(
        {
            "PREFECT_HOME": str(_SESSION / "prefect"),
            "PLANFLOW_HOME": str(_SESSION / "planflow"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
            # Prefect's temporary server migrates a fresh database first: 20-50 s on a
            # loaded 2-core machine, beyond Prefect's default 20 s start-up timeout.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
    )
    return _SESSION


def copy_prefect_db(source: Path, dest_home: Path) -> None:
    """Copy a Prefect SQLite database into `dest_home` (the backup API: consistent even
    while a server writes to it)."""
    dest_home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(dest_home / "prefect.db") as dst:
        src.backup(dst)


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
