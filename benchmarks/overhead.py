"""1. Orchestration overhead per node: the Prefect flow vs plain asyncio, zero model latency.

Both executors run the same layered DAG against the same local server (which
answers at once), with the same client library, prompts and parallelism. The
time per node is then almost all orchestration. Prefect's temporary API server
start-up is paid once per process; it is measured separately (`prefect_warmup`)
and kept out of the per-node figures by a warm-up run. Each run starts with the
server idle, and its CPU is counted until it has worked off the run's events;
`ms_per_node_drained` counts the wall time until then too (the server can fall
behind a fast flow and record its task runs seconds after the flow returned).
Planflow runs twice per repetition: with task-run tags (`PLANFLOW_TASK_TAGS=true`,
the default until 2026-12) and as shipped, without them: Prefect requests tag
concurrency slots before every tagged task run, and on a SQLite-backed Prefect
server that request often meets a 503 and a 2 s client retry (benchmarks/README.md).
`--prefect-api URL` runs the same against a running server, e.g. on PostgreSQL.
Beside them, Prefect's floor (`benchmarks.prefect_floor`): a minimal flow with one
persisted, cache-keyed task per node, sync tasks on the thread pool and async tasks
on the flow's loop, so the table reads asyncio / Prefect floor / Planflow.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import baselines, prefect_floor
from benchmarks._instrument import IOCounter, ThreadProfiler
from benchmarks._server import latency_server, reset_server
from benchmarks.common import (
    Result,
    log,
    prefect_server_pid,
    process_cpu_seconds,
    pyplot,
    run_flow,
    unique_key,
    warm_prefect,
)
from benchmarks.data import layered_dag, plan_stats

MAX_PARALLEL = 10
GOAL = "Benchmark the orchestration overhead of a layered plan"


def _wait_until_idle(pid: int | None, limit_s: float = 60.0) -> float:
    """Wait until Prefect's server has worked off its event backlog (under 5% CPU for
    0.5 s), so one run's backlog is not billed to the next; returns the seconds waited."""
    t0 = time.monotonic()
    while pid is not None and time.monotonic() - t0 < limit_s:
        before = process_cpu_seconds(pid)
        time.sleep(0.5)
        if process_cpu_seconds(pid) - before < 0.025:
            break
    return time.monotonic() - t0


def _measure(server: Any, fn: Any, n_nodes: int) -> dict[str, Any]:
    reset_server(server)
    pid = prefect_server_pid()
    _wait_until_idle(pid)
    cpu0, srv0, t0 = time.process_time(), process_cpu_seconds(pid), time.monotonic()
    fn()
    wall = time.monotonic() - t0
    drain = _wait_until_idle(pid)  # the server's work for this run, finished after it
    cpu, srv_cpu = time.process_time() - cpu0, process_cpu_seconds(pid) - srv0
    calls = server.calls
    span = max(c.finished for c in calls) - min(c.started for c in calls) if calls else 0.0
    return {
        "wall_s": round(wall, 4),
        "ms_per_node": round(1000 * wall / n_nodes, 3),
        "call_span_ms_per_node": round(1000 * span / n_nodes, 3),
        "cpu_ms_per_node": round(1000 * cpu / n_nodes, 3),
        "prefect_server_cpu_ms_per_node": round(1000 * srv_cpu / n_nodes, 3),
        "server_drain_s": round(drain, 2),
        # until the server has also recorded everything (one idle poll, 0.5 s, is not work)
        "ms_per_node_drained": round(1000 * (wall + max(0.0, drain - 0.5)) / n_nodes, 3),
        "llm_calls": len(calls),
    }


def _asyncio_once(base_url: str, plan: dict[str, Any]) -> None:
    baselines.run_asyncio_blocking(plan, GOAL, base_url, max_parallel=MAX_PARALLEL)


def run(out: Path, quick: bool) -> Result:
    sizes = [20] if quick else [10, 100, 500]
    reps = {n: (1 if quick else (3 if n <= 100 else 1)) for n in sizes}
    result = Result("overhead", quick, {"sizes": sizes, "reps": reps, "width": 10, "max_parallel": MAX_PARALLEL,
                                        "latency_s": 0.0, "seed": 0})
    server = latency_server(0.0)
    try:
        warmup = warm_prefect(server.base_url)
        result["prefect_warmup"] = warmup
        _asyncio_once(server.base_url, layered_dag(10))  # warm the baseline's imports too
        for floor in (prefect_floor.run_prefect_sync, prefect_floor.run_prefect_async):  # and register the floors' flows
            floor(layered_dag(4, width=2), GOAL, server.base_url, run_key=unique_key("floor-warm"), max_parallel=4)
        rows = []
        for n in sizes:
            plan = layered_dag(n, width=10, seed=0)
            stats = plan_stats(plan)
            runs: dict[str, list[dict[str, Any]]] = {"prefect": [], "prefect_untagged": [], "asyncio": [],
                                                     "floor_sync": [], "floor_async": []}
            for rep in range(reps[n]):
                runs["asyncio"].append(_measure(server, lambda: _asyncio_once(server.base_url, plan), n))
                for variant, floor in (("floor_sync", prefect_floor.run_prefect_sync),
                                       ("floor_async", prefect_floor.run_prefect_async)):
                    key = unique_key(f"overhead-{variant}-{n}")
                    runs[variant].append(_measure(
                        server, lambda: floor(plan, GOAL, server.base_url, run_key=key, max_parallel=MAX_PARALLEL), n))
                for variant, tags in (("prefect", "true"), ("prefect_untagged", "false")):
                    key = unique_key(f"overhead-{n}")
                    os.environ["PLANFLOW_TASK_TAGS"] = tags  # tagged (opt-in); then as shipped, untagged
                    try:
                        runs[variant].append(
                            _measure(server, lambda: run_flow(GOAL, plan, key, MAX_PARALLEL, server.base_url), n)
                        )
                    finally:
                        os.environ.pop("PLANFLOW_TASK_TAGS", None)
                log(f"overhead n={n} rep={rep}: prefect {runs['prefect'][-1]['ms_per_node']} ms/node "
                    f"(untagged {runs['prefect_untagged'][-1]['ms_per_node']}), "
                    f"asyncio {runs['asyncio'][-1]['ms_per_node']} ms/node, Prefect floor sync "
                    f"{runs['floor_sync'][-1]['ms_per_node']} / async {runs['floor_async'][-1]['ms_per_node']} ms/node")
            med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
            rows.append({
                "n_nodes": n,
                "dag": stats,
                "prefect_ms_per_node": round(med["prefect"]["ms_per_node"], 3),
                "asyncio_ms_per_node": round(med["asyncio"]["ms_per_node"], 3),
                "ratio": round(med["prefect"]["ms_per_node"] / med["asyncio"]["ms_per_node"], 2),
                "drained_ms_per_node": round(med["prefect"]["ms_per_node_drained"], 3),
                "untagged_ms_per_node": round(med["prefect_untagged"]["ms_per_node"], 3),
                "untagged_drained_ms_per_node": round(med["prefect_untagged"]["ms_per_node_drained"], 3),
                "untagged_ratio": round(med["prefect_untagged"]["ms_per_node"] / med["asyncio"]["ms_per_node"], 2),
                "prefect_cpu_ms_per_node": round(med["prefect"]["cpu_ms_per_node"], 3),
                "prefect_server_cpu_ms_per_node": round(med["prefect"]["prefect_server_cpu_ms_per_node"], 3),
                "asyncio_cpu_ms_per_node": round(med["asyncio"]["cpu_ms_per_node"], 3),
                "floor_sync_ms_per_node": round(med["floor_sync"]["ms_per_node"], 3),
                "floor_async_ms_per_node": round(med["floor_async"]["ms_per_node"], 3),
                "floor_sync_ratio": round(med["floor_sync"]["ms_per_node"] / med["asyncio"]["ms_per_node"], 2),
                "floor_async_ratio": round(med["floor_async"]["ms_per_node"] / med["asyncio"]["ms_per_node"], 2),
                "over_floor_async": round(med["prefect"]["ms_per_node"] / med["floor_async"]["ms_per_node"], 2),
                "untagged_over_floor_async": round(
                    med["prefect_untagged"]["ms_per_node"] / med["floor_async"]["ms_per_node"], 2),
                "floor_sync_server_cpu_ms_per_node": round(med["floor_sync"]["prefect_server_cpu_ms_per_node"], 3),
                "floor_async_server_cpu_ms_per_node": round(med["floor_async"]["prefect_server_cpu_ms_per_node"], 3),
                "floor_async_cpu_ms_per_node": round(med["floor_async"]["cpu_ms_per_node"], 3),
                "runs": runs,
            })
        result["sizes"] = rows
        n_prof = 20 if quick else 100
        result["profile"] = _profile(server, n_prof)
        result["summary"] = {
            "ms_per_node": {str(r["n_nodes"]): {"prefect": r["prefect_ms_per_node"], "asyncio": r["asyncio_ms_per_node"],
                                                "ratio": r["ratio"], "prefect_drained": r["drained_ms_per_node"],
                                                "prefect_untagged": r["untagged_ms_per_node"],
                                                "untagged_ratio": r["untagged_ratio"],
                                                "prefect_untagged_drained": r["untagged_drained_ms_per_node"],
                                                "floor_sync": r["floor_sync_ms_per_node"],
                                                "floor_async": r["floor_async_ms_per_node"],
                                                "floor_sync_ratio": r["floor_sync_ratio"],
                                                "floor_async_ratio": r["floor_async_ratio"],
                                                "over_floor_async": r["over_floor_async"],
                                                "untagged_over_floor_async": r["untagged_over_floor_async"]}
                           for r in rows},
            "prefect_first_run_s": warmup["first_run_s"],
            "prefect_one_node_run_s": warmup["second_run_s"],
        }
    finally:
        server.stop()
    _plot(result, out)
    result.write(out)
    return result


def _profile(server: Any, n: int) -> dict[str, Any]:
    """One profiled Prefect run: cProfile of the flow thread and task threads, plus I/O counts."""
    plan = layered_dag(n, width=10, seed=1)
    reset_server(server)
    port = int(server.base_url.rsplit(":", 1)[1].split("/", 1)[0])
    key = unique_key(f"profile-{n}")
    t0 = time.monotonic()
    with IOCounter(ignore_port=port) as io, ThreadProfiler() as prof:
        run_flow(GOAL, plan, key, MAX_PARALLEL, server.base_url)
    wall = time.monotonic() - t0
    report = prof.report(15)
    report.update({"n_nodes": n, "wall_s_profiled": round(wall, 3), "io": io.summary(per=n)})
    return report


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    rows = result["sizes"]
    labels = [str(r["n_nodes"]) for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    bars = (("prefect_ms_per_node", "Planflow, PLANFLOW_TASK_TAGS=true", "ratio"),
            ("untagged_ms_per_node", "Planflow as shipped (untagged)", "untagged_ratio"),
            ("floor_sync_ms_per_node", "Prefect floor, sync tasks", "floor_sync_ratio"),
            ("floor_async_ms_per_node", "Prefect floor, async tasks", "floor_async_ratio"),
            ("asyncio_ms_per_node", "plain asyncio", None))
    bars = tuple(b for b in bars if all(b[0] in r for r in rows))  # older result files have no floor
    w = 0.8 / len(bars)
    for k, (field, label, ratio) in enumerate(bars):
        xs = [i + (k - (len(bars) - 1) / 2) * w for i in x]
        ax.bar(xs, [r[field] for r in rows], w, label=label)
        for xi, r in zip(xs, rows):
            if ratio:
                ax.annotate(f"{r[ratio]}x", (xi, r[field]), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("DAG size (nodes; layered, width 10)")
    ax.set_ylabel("wall ms per node (log)")
    ax.set_title(f"Orchestration overhead, zero model latency, max_parallel={MAX_PARALLEL} (x = / asyncio)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "overhead.png", dpi=110)
    plt.close(fig)
