"""Where a dependency hop's milliseconds go: a chain traced along the path, Planflow vs Prefect's floor.

A chain of N nodes against the fake model server at 0 ms, `max_parallel` 1, the
real flow in this process. Each hop (node i's answer leaving the server to node
i+1's request arriving) is cut at timestamps taken by wrapping functions on the
path (this harness only; nothing in Planflow is changed to be measured):

* `model answer -> client`: the openai SDK reading and parsing the response;
* `task body end`: from the client's return to the task function's return;
* `Prefect: end the task run`: result persisted, transaction committed,
  Completed state and its event, the state handed back to the executor;
* `executor`: Planflow's executor settling the node and starting its dependent;
* `Prefect: start the next task run`: task run created, cache looked up,
  Running state (and, when the task run has tags, the tag concurrency-slot
  request: a round trip to the Prefect API per task run), parameters resolved;
* `task body start`: from the task function's start to the model call (prompt
  building; Planflow's ledger write of the attempt; with tools, the tool
  definitions);
* `client -> model request`: the SDK building and sending the request.

Inside the Prefect segments, inclusive seconds of the engine's own steps are
summed per task run: `begin_run` (Running state), the tag concurrency request,
the cache lookup (transaction enter), `handle_success`, result persistence.

Configurations, one after another, each run twice with the first discarded:
Planflow as shipped (built-in tools offered: a node's first turn is asked
directly, so a node that answers at once has no nested model-turn task), without
built-in tools, the same with task-run tags (`PLANFLOW_TASK_TAGS=true`), and the
async Prefect floor (`benchmarks.prefect_floor.run_prefect_async`: one persisted cache-keyed
async task per node, no tags).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import prefect_floor
from benchmarks._server import latency_server, reset_server
from benchmarks.common import Result, log, percentile, pyplot, run_flow, unique_key, warm_prefect
from benchmarks.dispatch import chain_plan

GOAL = "Trace where each millisecond of a dependency hop goes"
CONFIGS = {
    "planflow": {"PLANFLOW_TASK_TAGS": "false"},
    "planflow_no_builtin_tools": {"PLANFLOW_BUILTIN_TOOLS": "false", "PLANFLOW_TASK_TAGS": "false"},
    "planflow_tagged_no_tools": {"PLANFLOW_BUILTIN_TOOLS": "false", "PLANFLOW_TASK_TAGS": "true"},
    "prefect_floor_async": {},
}
LABELS = {
    "planflow": "Planflow as shipped (built-in tools)",
    "planflow_no_builtin_tools": "Planflow, --no-builtin-tools",
    "planflow_tagged_no_tools": "Planflow, --no-builtin-tools, PLANFLOW_TASK_TAGS=true",
    "prefect_floor_async": "Prefect floor, async tasks",
}
SEGMENTS = (
    "model answer -> client",
    "task body end",
    "Prefect: end the task run",
    "executor",
    "Prefect: start the next task run",
    "Prefect: end the task run, start the next (floor)",
    "task body start",
    "client -> model request",
)
FLOOR_PREFECT = "Prefect: end the task run, start the next (floor)"
ENGINE_STEPS = ("begin_run", "tag concurrency slots", "cache lookup", "handle_success", "persist result")


class _Tracer:
    """Timestamps per node along the path, and inclusive engine-step seconds per task run."""

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, float]] = defaultdict(dict)
        self.engine: dict[str, float] = defaultdict(float)
        self.task_runs = 0

    def mark(self, point: str, node: str | None) -> None:
        if node is not None:
            self.marks[point][node] = time.monotonic()

    def clear(self) -> None:
        self.marks.clear()
        self.engine.clear()
        self.task_runs = 0


@contextlib.contextmanager
def _traced(tracer: _Tracer) -> Iterator[None]:
    """Wrap the path's functions for the duration; restore them after."""
    import prefect.results as results
    import prefect.task_engine as engine

    import flows.executor as executor
    import flows.tasks as tasks
    import planner.llm as llm

    undo: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def timed_async(step: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            finally:
                tracer.engine[step] += time.monotonic() - t0
        return wrapper

    node_fn = tasks.execute_node.fn

    async def node_body(spec: Any, upstream: Any) -> Any:
        tracer.mark("body_start", spec.task.id)
        try:
            return await node_fn(spec, upstream)
        finally:
            tracer.mark("body_end", spec.task.id)

    floor_fn = prefect_floor._async_call.fn

    async def floor_body(run_key: str, name: str, model: str, messages: Any) -> Any:
        node = name.removeprefix("node:")
        tracer.mark("body_start", node)
        tracer.mark("client_start", node)
        try:
            return await floor_fn(run_key, name, model, messages)
        finally:
            tracer.mark("client_end", node)
            tracer.mark("body_end", node)

    complete = llm.LLMClient.complete

    async def traced_complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        node = kwargs.get("node_id")
        tracer.mark("client_start", node)
        try:
            return await complete(self, *args, **kwargs)
        finally:
            tracer.mark("client_end", node)

    settle = executor._settle

    async def traced_settle(result: Any, node: str, done: Any) -> Any:
        tracer.mark("settle_start", node)
        try:
            return await settle(result, node, done)
        finally:
            tracer.mark("settle_end", node)

    concurrency = engine._aconcurrency

    @contextlib.asynccontextmanager
    async def traced_concurrency(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        async with concurrency(*args, **kwargs):
            tracer.engine["tag concurrency slots"] += time.monotonic() - t0
            try:
                yield
            finally:
                t1 = time.monotonic()
        tracer.engine["tag concurrency slots"] += time.monotonic() - t1

    transaction_context = engine.AsyncTaskRunEngine.transaction_context

    @contextlib.asynccontextmanager
    async def traced_transaction(self: Any) -> Any:
        t0 = time.monotonic()
        async with transaction_context(self) as txn:
            tracer.engine["cache lookup"] += time.monotonic() - t0
            tracer.task_runs += 1
            yield txn

    engine_cls = engine.AsyncTaskRunEngine
    patch(tasks.execute_node, "fn", node_body)
    patch(prefect_floor._async_call, "fn", floor_body)
    patch(llm.LLMClient, "complete", traced_complete)
    patch(executor, "_settle", traced_settle)
    patch(engine, "_aconcurrency", traced_concurrency)
    patch(engine_cls, "transaction_context", traced_transaction)
    patch(engine_cls, "begin_run", timed_async("begin_run", engine_cls.begin_run))
    patch(engine_cls, "handle_success", timed_async("handle_success", engine_cls.handle_success))
    patch(results.ResultStore, "apersist_result_record",
          timed_async("persist result", results.ResultStore.apersist_result_record))
    try:
        yield
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def _segments(tracer: _Tracer, calls: list[Any], n: int, floor: bool) -> dict[str, list[float]]:
    """Per hop (node i-1 -> i), milliseconds in each segment."""
    m = tracer.marks
    out: dict[str, list[float]] = defaultdict(list)
    for i in range(1, n):
        prev, cur = f"c{i - 1}", f"c{i}"
        if floor:  # the task body is the SDK call; Prefect's end, its future and the next start are one stretch
            points = [("model answer -> client", m["client_end"][prev]),
                      (FLOOR_PREFECT, m["body_start"][cur]),
                      ("client -> model request", calls[i].started)]
        else:
            points = [("model answer -> client", m["client_end"][prev]),
                      ("task body end", m["body_end"][prev]),
                      ("Prefect: end the task run", m["settle_start"][prev]),
                      ("executor", m["settle_end"][prev]),
                      ("Prefect: start the next task run", m["body_start"][cur]),
                      ("task body start", m["client_start"][cur]),
                      ("client -> model request", calls[i].started)]
        t = calls[i - 1].finished
        for name, when in points:
            out[name].append(1000 * (when - t))
            t = when
    return out


def _run_once(config: str, n: int, base_url: str) -> None:
    if config == "prefect_floor_async":
        prefect_floor.run_prefect_async(chain_plan(n), GOAL, base_url, run_key=unique_key("hop-floor"), max_parallel=1)
    else:
        run_flow(GOAL, chain_plan(n), unique_key("hop"), 1, base_url)


def run(out: Path, quick: bool) -> Result:
    n = 6 if quick else 30
    result = Result("hop_profile", quick, {"chain_nodes": n, "latency_s": 0.0, "max_parallel": 1,
                                           "configs": {k: LABELS[k] for k in CONFIGS}})
    server = latency_server(0.0)
    tracer = _Tracer()
    summary: dict[str, Any] = {}
    try:
        result["prefect_warmup"] = warm_prefect(server.base_url)
        for config, env in CONFIGS.items():
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                with _traced(tracer):
                    _run_once(config, 3, server.base_url)  # the first run of a flow/config pays one-offs
                    reset_server(server)
                    tracer.clear()
                    _run_once(config, n, server.base_url)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            calls = sorted(server.calls, key=lambda c: c.started)[:n]
            segments = _segments(tracer, calls, n, floor=config == "prefect_floor_async")
            hops = [1000 * (calls[i].started - calls[i - 1].finished) for i in range(1, n)]
            summary[config] = {
                "hop_ms": {"p50": round(percentile(hops, 50), 2), "p95": round(percentile(hops, 95), 2)},
                "segments_ms_p50": {s: round(statistics.median(segments[s]), 2) for s in SEGMENTS if segments.get(s)},
                "engine_ms_per_task_run": {
                    step: round(1000 * tracer.engine[step] / max(tracer.task_runs, 1), 2) for step in ENGINE_STEPS
                },
                "task_runs_per_node": round(tracer.task_runs / n, 2),
            }
            log(f"hop_profile {config}: hop p50 {summary[config]['hop_ms']['p50']:.1f} ms; "
                + ", ".join(f"{s} {v:.1f}" for s, v in summary[config]["segments_ms_p50"].items()))
    finally:
        server.stop()
    result["summary"] = summary
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    summary = result["summary"]
    configs = list(summary)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    left = [0.0] * len(configs)
    for segment in SEGMENTS:
        widths = [summary[c]["segments_ms_p50"].get(segment, 0.0) for c in configs]
        ax.barh([LABELS[c] for c in configs], widths, left=left, label=segment)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("ms per dependency hop (median of each segment), 0 ms model")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "hop_profile.png", dpi=110)
    plt.close(fig)
