"""What a flow run holds open while it runs: the ledger, the model client, the embedded model.

Every node is an async Prefect task awaited on the flow's own event loop, so the
model client (async, one connection pool for the run) lives on that loop too and
no thread hand-off sits on the hot path. The ledger is SQLite or PostgreSQL
through a blocking driver: its writes go to one writer thread, in order, so a
slow fsync never stalls the loop that dispatches nodes.

Tasks find the resources through a context variable: asyncio copies the
submitting context into each node's task, and non-serialisable objects stay out
of task parameters (and out of cache keys).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flows.artifacts import RunArtifacts
from planner.embedded import EMBEDDED_MODEL_NAME, EmbeddedModelServer, EmbeddedServerConfig
from planner.ledger import Ledger
from planner.llm import LLMClient
from planner.settings import PlanflowSettings
from planner.tools import Toolbox
from planner.tools.sources import open_toolbox

__all__ = ["LedgerWriter", "RunResources", "current_resources", "open_resources"]

T = TypeVar("T")

_current: contextvars.ContextVar[RunResources] = contextvars.ContextVar("planflow_run_resources")


class LedgerWriter:
    """One thread that performs ledger writes in submission order, off the event loop."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planflow-ledger")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the writer thread and await its result."""
        return await asyncio.wrap_future(self._pool.submit(functools.partial(fn, *args, **kwargs)))

    def soon(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue a write without waiting for it (bookkeeping such as per-call usage)."""
        return self._pool.submit(functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Wait for every queued write, then stop the thread."""
        self._pool.shutdown(wait=True)


class Heartbeat:
    """Beats in the ledger every few seconds, so a run on another machine whose
    process died is recognised as dead (a local one by its pid, start time and boot id)."""

    def __init__(self, ledger: Ledger, run_key: str, owner: str, interval: float = 5.0) -> None:
        self._stop = threading.Event()
        self._args = (ledger, run_key, owner, interval)
        self._thread = threading.Thread(target=self._beat, name="planflow-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        ledger, run_key, owner, interval = self._args
        while not self._stop.wait(interval):
            try:
                ledger.heartbeat(run_key, owner)
            except Exception:  # a missed beat only makes the run look stale sooner
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class RunResources:
    run_key: str
    settings: PlanflowSettings
    ledger: Ledger
    llm: LLMClient
    model: str
    artifacts: RunArtifacts
    write: LedgerWriter
    embedded: bool = False
    tools: Toolbox | None = None
    """What nodes may call; None for the embedded model, which cannot call tools usefully."""


def current_resources() -> RunResources:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "Planflow tasks run only inside the plan_and_execute flow (no run resources are open)"
        ) from None


@asynccontextmanager
async def open_resources(
    settings: PlanflowSettings, run_key: str, ledger: Ledger, owner: str
) -> AsyncIterator[RunResources]:
    """Start what a run needs (the embedded model if no endpoint is set, the ledger
    heartbeat that tells other processes this run is alive) and stop it after."""
    embedded: EmbeddedModelServer | None = None
    writer = LedgerWriter()
    heartbeat = Heartbeat(ledger, run_key, owner)
    try:
        if settings.uses_embedded_model:
            settings.home.mkdir(parents=True, exist_ok=True)
            config = EmbeddedServerConfig(
                ctx_size=settings.embedded_ctx,
                threads=settings.embedded_threads,
                log_file=settings.home / "embedded-model.log",
            )
            embedded = await asyncio.to_thread(EmbeddedModelServer(config).start)
            base_url, api_key, model = embedded.base_url, "embedded", EMBEDDED_MODEL_NAME
        else:
            base_url = settings.base_url or "https://api.openai.com/v1"
            api_key = settings.api_key.get_secret_value() if settings.api_key else "not-needed"
            model = settings.model_name

        llm = LLMClient(
            base_url=base_url,
            api_key=api_key,
            model=model,
            timeout=settings.request_timeout,
            retry_after_cap=settings.retry_after_cap,
            on_call=lambda call: writer.soon(ledger.record_llm_call, run_key, call),
        )
        tools = None if embedded is not None else await open_toolbox(settings, run_key)
        resources = RunResources(
            run_key,
            settings,
            ledger,
            llm,
            model,
            RunArtifacts(run_key, ledger),
            writer,
            embedded=embedded is not None,
            tools=tools or None,
        )
        token = _current.set(resources)
        try:
            yield resources
        finally:
            _current.reset(token)
            await llm.aclose()
            if tools is not None:
                await tools.aclose()
    finally:
        heartbeat.stop()
        writer.close()
        if embedded is not None:
            embedded.stop()
