"""Cancelling a run: the Prefect UI's Cancel button, `prefect flow-run cancel ID`,
`planflow runs cancel KEY`, or Ctrl-C.

The first three only set the flow run Cancelling on the Prefect API. A worker's flow
run is then stopped by its worker, which runs the flow's `on_cancellation` hook
(`record_cancel_hook` here). A flow run started by the CLI or a script has no worker,
and Prefect 3.9's engine does not look: the run would go on to its end and finish
"Cancelling". So a run watches its own flow run (`run_cancellable`): a subscription to
its Cancelling event, with a state poll as a safety net. Ctrl-C (SIGINT) and, outside a
worker, SIGTERM take the same path.

A cancel cancels the asyncio tasks of the running nodes (their model calls are abandoned
mid-request); the ledger then says `cancelled` (who, when), the nodes that were running
say `cancelled`, finished ones keep their results, and the flow run and its unfinished
task runs end Cancelled. Running the key again resumes: finished nodes replay from cache.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

__all__ = [
    "CANCEL_POLL_SECONDS",
    "CancelRequest",
    "RunCancelled",
    "cancel_in_prefect",
    "record_cancel_hook",
    "run_cancellable",
]

T = TypeVar("T")

CANCEL_POLL_SECONDS = 10.0
"""How often the flow run's state is read while its event subscription is up (a safety
net: the event arrives within a fraction of a second)."""

CANCEL_POLL_SECONDS_WITHOUT_EVENTS = 2.0
"""How often it is read when the API's event stream cannot be had."""

PREFECT_BOUND_SECONDS = 10.0
"""Longest wait for the Prefect API while recording a cancel (a Ctrl-C in a terminal
stops the CLI's temporary Prefect server too): the ledger is the record that counts."""


@dataclass(frozen=True)
class CancelRequest:
    """Who asked to cancel, and when."""

    by: str
    """"prefect" (the UI or `prefect flow-run cancel`), "ctrl-c", "SIGTERM"; a pending
    `planflow runs cancel` request in the ledger names the user instead."""
    at: datetime
    message: str | None = None


class RunCancelled(Exception):
    """The run was cancelled while it worked. Deliberately not a `PlanflowError`: a run
    that failed and a run that was stopped end differently."""

    def __init__(self, request: CancelRequest) -> None:
        super().__init__(f"cancelled by {request.by}")
        self.request = request


async def run_cancellable(
    work: Coroutine[Any, Any, T], flow_run_id: str | None, *, poll_seconds: float = CANCEL_POLL_SECONDS
) -> T:
    """Await `work`; if the flow run is set Cancelling, or SIGINT/SIGTERM arrives, cancel
    it (and every node task it awaits) and raise `RunCancelled`.

    A second SIGINT while the cancel is recorded raises KeyboardInterrupt at once.
    """
    loop = asyncio.get_running_loop()
    requested: asyncio.Future[CancelRequest] = loop.create_future()

    def request(cancel: CancelRequest) -> None:
        if not requested.done():
            requested.set_result(cancel)

    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_watch_flow_run(flow_run_id, request, poll_seconds)) if flow_run_id else None
    with _signals_request_cancel(loop, request):
        try:
            await asyncio.wait({job, requested}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # cancelled from outside (the engine, a timeout): work goes too
            job.cancel()
            await asyncio.wait({job})
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if watcher is not None:  # let it close its connections while the loop still runs
            await asyncio.wait({watcher}, timeout=PREFECT_BOUND_SECONDS)
        if job.done():  # it ended first (or at the same moment): its outcome stands
            return job.result()
        job.cancel()
        try:
            result = await job
        except asyncio.CancelledError:
            raise RunCancelled(requested.result()) from None
        return result  # it finished before the cancel reached it


@contextmanager
def _signals_request_cancel(loop: asyncio.AbstractEventLoop, request: Callable[[CancelRequest], None]) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM cancel the run like the Cancel button; a second SIGINT
    is the hard stop it always was. Under a Prefect worker SIGTERM stays Prefect's: the
    worker uses it to stop the process (and then runs the cancellation hook)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a flow run elsewhere has none
        return
    names = {signal.SIGINT: "ctrl-c"}
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):  # set in processes a worker or runner starts
        names[signal.SIGTERM] = "SIGTERM"
    seen: set[int] = set()

    def handler(signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and signum in seen:
            raise KeyboardInterrupt
        seen.add(signum)
        loop.call_soon_threadsafe(request, CancelRequest(by=names[signum], at=datetime.now(timezone.utc)))

    previous = {sig: signal.signal(sig, handler) for sig in names}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _request_from_state(state: Any) -> CancelRequest | None:
    """A flow run state that asks for a cancel (Cancelling), or one that already is (Cancelled)."""
    from prefect.client.schemas.objects import StateType

    if state is None or state.type not in (StateType.CANCELLING, StateType.CANCELLED):
        return None
    return CancelRequest(by="prefect", at=state.timestamp, message=state.message or None)


async def _watch_flow_run(flow_run_id: str, request: Callable[[CancelRequest], None], poll_seconds: float) -> None:
    """Call `request` once the flow run is Cancelling: at once on its event, else at the next poll."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        streaming = asyncio.Event()
        wake = asyncio.Event()
        events = asyncio.ensure_future(_follow_events(flow_run_id, streaming, wake))
        try:
            while True:
                try:
                    run = await client.read_flow_run(flow_run_id)
                except Exception:  # an API hiccup: look again at the next poll
                    run = None
                if run is not None and (cancel := _request_from_state(run.state)) is not None:
                    request(cancel)
                    return
                wake.clear()
                interval = poll_seconds if streaming.is_set() else CANCEL_POLL_SECONDS_WITHOUT_EVENTS
                try:
                    await asyncio.wait_for(wake.wait(), timeout=interval)
                except asyncio.TimeoutError:
                    pass
        finally:
            events.cancel()
            await asyncio.wait({events})


async def _follow_events(flow_run_id: str, streaming: asyncio.Event, wake: asyncio.Event) -> None:
    """Set `wake` when the flow run's Cancelling (or Cancelled) event arrives; the poll then confirms it."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.Cancelling", "prefect.flow-run.Cancelled"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    try:
        async with get_events_subscriber(filter=wanted) as subscriber:
            streaming.set()
            wake.set()  # look once more: a cancel may have come before the subscription
            async for _event in subscriber:
                wake.set()
    except Exception:  # no event stream (an old server, a proxy): the poll alone decides
        pass
    finally:
        streaming.clear()


async def cancel_in_prefect(flow_run_id: str, message: str) -> None:
    """End the flow run's unfinished (or crashed by the cancel) task runs Cancelled; best
    effort and bounded: the flow run's own state is the engine's to set."""
    try:
        await asyncio.wait_for(_cancel_task_runs(flow_run_id, message), timeout=PREFECT_BOUND_SECONDS)
    except Exception:  # the API is going away (Ctrl-C stops the temporary server too)
        pass


async def _cancel_task_runs(flow_run_id: str, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterState
    from prefect.client.schemas.filters import TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    unfinished = [StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED, StateType.PAUSED, StateType.CRASHED]
    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))),
        )
        for task_run in task_runs:
            await client.set_task_run_state(task_run.id, Cancelled(message=message), force=True)


def record_cancel_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_cancellation` hook: a worker stopped the flow run's process before it could say
    so itself; the ledger records the cancel (nothing changes if the run already did)."""
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    ledger = Ledger(PlanflowSettings().ledger_url)
    try:
        run = ledger.run_by_flow_run(str(flow_run.id))
        if run is not None:
            ledger.cancel_run(run.run_key, by="prefect", at=getattr(state, "timestamp", None), flow_run_id=str(flow_run.id))
    finally:
        ledger.close()
