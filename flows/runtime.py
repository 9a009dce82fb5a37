"""What a flow run holds open while it runs: the ledger, the model client, the embedded model.

Prefect runs each task in a worker thread (sync tasks) and the `openai` async
client belongs to one event loop, so the client lives on a dedicated loop
thread and tasks hand it coroutines. One client per run means one connection
pool and one TLS setup, not one per node (client construction costs tens of ms).

Tasks find the resources through a context variable: Prefect copies the
submitting context into each task's thread, and non-serialisable objects stay
out of task parameters (and out of cache keys).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from flows.artifacts import RunArtifacts
from planner.embedded import EMBEDDED_MODEL_NAME, EmbeddedModelServer, EmbeddedServerConfig
from planner.ledger import Ledger
from planner.llm import LLMClient
from planner.settings import PlanflowSettings

__all__ = ["LoopThread", "RunResources", "await_result", "current_resources", "open_resources"]

T = TypeVar("T")

_current: contextvars.ContextVar[RunResources] = contextvars.ContextVar("planflow_run_resources")


class LoopThread:
    """An event loop on a daemon thread, for running coroutines from sync code."""

    def __init__(self, name: str = "planflow-llm") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on this loop from another event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class Heartbeat:
    """Beats in the ledger every few seconds, so a run on another machine whose
    process died is recognised as dead (a local one is recognised by its pid)."""

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
    loop: LoopThread
    model: str
    artifacts: RunArtifacts
    embedded: bool = False

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an LLM coroutine on the client's loop and wait for it (from a task thread)."""
        return self.loop.run(coro)


def current_resources() -> RunResources:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "Planflow tasks run only inside the plan_and_execute flow (no run resources are open)"
        ) from None


@contextmanager
def open_resources(
    settings: PlanflowSettings, run_key: str, ledger: Ledger, owner: str
) -> Iterator[RunResources]:
    """Start what a run needs (the embedded model if no endpoint is set, the ledger
    heartbeat that tells other processes this run is alive) and stop it after."""
    embedded: EmbeddedModelServer | None = None
    loop = LoopThread()
    heartbeat = Heartbeat(ledger, run_key, owner)
    try:
        if settings.uses_embedded_model:
            settings.home.mkdir(parents=True, exist_ok=True)
            embedded = EmbeddedModelServer(
                EmbeddedServerConfig(
                    ctx_size=settings.embedded_ctx,
                    threads=settings.embedded_threads,
                    log_file=settings.home / "embedded-model.log",
                )
            ).start()
            base_url, api_key, model = embedded.base_url, "embedded", EMBEDDED_MODEL_NAME
        else:
            base_url = settings.base_url or "https://api.openai.com/v1"
            api_key = settings.api_key.get_secret_value() if settings.api_key else "not-needed"
            model = settings.model_name

        def record(call: Any) -> None:
            ledger.record_llm_call(run_key, call)

        async def make_client() -> LLMClient:
            return LLMClient(
                base_url=base_url,
                api_key=api_key,
                model=model,
                timeout=settings.request_timeout,
                retry_after_cap=settings.retry_after_cap,
                on_call=record,
            )

        llm = loop.run(make_client())
        resources = RunResources(
            run_key, settings, ledger, llm, loop, model, RunArtifacts(run_key, ledger), embedded=embedded is not None
        )
        token = _current.set(resources)
        try:
            yield resources
        finally:
            _current.reset(token)
            loop.run(llm.aclose())
    finally:
        heartbeat.stop()
        loop.close()
        if embedded is not None:
            embedded.stop()


async def await_result(future: Any) -> Any:
    """The result of a submitted Prefect task, awaited without blocking the flow's loop."""
    await asyncio.wrap_future(future.wrapped_future)
    return future.result()
