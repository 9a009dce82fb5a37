"""Counters and profilers for finding where orchestration time goes.

* `IOCounter`: Prefect API requests (by method and path, from httpx), ledger SQL
  statements and commits (with the seconds spent in them, from SQLAlchemy engine
  events), and result files written to Prefect's local storage.
* `ThreadProfiler`: cProfile for the calling thread and every thread started
  while it is on (Python 3.11 has no all-threads profiling; threads that already
  exist, such as Prefect's long-lived client loop, are not covered).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class IOCounter:
    def __init__(self, ignore_port: int | None = None) -> None:
        self.ignore_port = ignore_port  # the fake model server's port: not an orchestration call
        self.api: Counter[str] = Counter()
        self.sql_statements = 0
        self.sql_commits = 0
        self.sql_seconds = 0.0
        self.storage_files = 0
        self.storage_bytes = 0
        self._lock = threading.Lock()
        self._undo: list[Any] = []

    def __enter__(self) -> IOCounter:
        import httpx
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        counter = self
        for cls in (httpx.AsyncClient, httpx.Client):
            original = cls.send

            if cls is httpx.AsyncClient:

                async def send(self: Any, request: Any, *args: Any, __orig: Any = original, **kwargs: Any) -> Any:
                    counter._note_request(request)
                    return await __orig(self, request, *args, **kwargs)

            else:

                def send(self: Any, request: Any, *args: Any, __orig: Any = original, **kwargs: Any) -> Any:
                    counter._note_request(request)
                    return __orig(self, request, *args, **kwargs)

            cls.send = send  # type: ignore[method-assign]
            self._undo.append((cls, original))

        local = threading.local()

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            local.t = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            with counter._lock:
                counter.sql_statements += 1
                counter.sql_seconds += time.perf_counter() - getattr(local, "t", time.perf_counter())

        def commit(conn: Any) -> None:
            with counter._lock:
                counter.sql_commits += 1

        self._events = [(Engine, "before_cursor_execute", before), (Engine, "after_cursor_execute", after),
                        (Engine, "commit", commit)]
        for target, name, fn in self._events:
            event.listen(target, name, fn)
        self._storage = self._storage_snapshot()
        return self

    def _note_request(self, request: Any) -> None:
        url = request.url
        if self.ignore_port is not None and url.port == self.ignore_port:
            return
        path = _ID.sub("/{id}", url.path)
        with self._lock:
            self.api[f"{request.method} {path}"] += 1

    @staticmethod
    def _storage_snapshot() -> dict[str, int]:
        root = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser() / "storage"
        if not root.exists():
            return {}
        return {str(p): p.stat().st_size for p in root.iterdir() if p.is_file()}

    def __exit__(self, *exc: Any) -> None:
        from sqlalchemy import event

        for cls, original in self._undo:
            cls.send = original
        for target, name, fn in self._events:
            event.remove(target, name, fn)
        after = self._storage_snapshot()
        new = {k: v for k, v in after.items() if k not in self._storage}
        self.storage_files, self.storage_bytes = len(new), sum(new.values())

    def summary(self, per: int) -> dict[str, Any]:
        total = sum(self.api.values())
        return {
            "prefect_api_requests": total,
            "prefect_api_requests_per_node": round(total / per, 2),
            "prefect_api_by_endpoint": dict(self.api.most_common(15)),
            "ledger_sql_statements_per_node": round(self.sql_statements / per, 2),
            "ledger_commits_per_node": round(self.sql_commits / per, 2),
            "ledger_sql_ms_per_node": round(1000 * self.sql_seconds / per, 2),
            "result_files_written": self.storage_files,
            "result_bytes_written": self.storage_bytes,
        }


class ThreadProfiler:
    """cProfile in this thread and in every thread started while enabled."""

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *args: Any) -> None:
        profile = cProfile.Profile()
        with self._lock:
            self.threads.append(profile)
        profile.enable()  # replaces this bootstrap hook for the rest of the thread

    def __enter__(self) -> ThreadProfiler:
        threading.setprofile(self._start_in_thread)
        self.main.enable()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]

    def _stats(self, profiles: list[cProfile.Profile]) -> pstats.Stats | None:
        stats: pstats.Stats | None = None
        for profile in profiles:
            try:
                if stats is None:
                    stats = pstats.Stats(profile, stream=io.StringIO())
                else:
                    stats.add(profile)
            except (TypeError, ValueError):  # a thread that never ran any Python
                continue
        return stats

    @staticmethod
    def top(stats: pstats.Stats | None, key: str, n: int = 15) -> list[dict[str, Any]]:
        if stats is None:
            return []
        stats.sort_stats(key)
        rows = []
        for func in stats.fcn_list[:n]:  # type: ignore[attr-defined]
            cc, nc, tt, ct, _ = stats.stats[func]  # type: ignore[attr-defined]
            filename, line, name = func
            where = _short_path(filename)
            rows.append({"function": f"{where}:{line}({name})", "calls": nc, "tottime_s": round(tt, 4),
                         "cumtime_s": round(ct, 4)})
        return rows

    def report(self, n: int = 15) -> dict[str, Any]:
        main = self._stats([self.main])
        workers = self._stats(list(self.threads))
        everything = self._stats([self.main, *self.threads])
        return {
            "threads_profiled": 1 + len(self.threads),
            "flow_thread_top_cumulative": self.top(main, "cumulative", n),
            "task_threads_top_cumulative": self.top(workers, "cumulative", n),
            "all_profiled_threads_top_tottime": self.top(everything, "tottime", n),
        }


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return filename
