"""The hot path: per-hop dispatch on a chain, and makespan of a wide DAG, against Prefect's floor.

* `chain`: a 20-node chain, 200 ms per model call. For each hop, the time from a
  dependency's model call ending to its dependent's model call starting, as the
  fake model server sees them (`RecordedCall.finished` of node i, when the
  answer is ready to go out, to `RecordedCall.started` of node i+1, when the
  next request has arrived and been parsed): everything between one answer and
  the next request is the executor's. p50 / p95 over all hops of all rounds.
* `stress`: the 100-node layered DAG (width 10, seed 0, one sink) at 50 ms per
  call, `max_parallel=10`: makespan on the server's clock, first call in to last
  call out; median of the rounds. The issue's target is Planflow <= 1.1x the
  async Prefect floor here.

Executors, one after another in each round, against the same server and the
same Prefect API: plain asyncio (`benchmarks.baselines.run_asyncio`), the two
Prefect floors (`benchmarks.prefect_floor`: sync tasks on the thread pool, async
tasks on the flow's loop), and Planflow's `plan_and_execute` as shipped.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import baselines, prefect_floor
from benchmarks._server import latency_server, reset_server
from benchmarks.common import Result, describe, log, percentile, pyplot, run_flow, unique_key, warm_prefect
from benchmarks.data import layered_dag, plan_stats

EXECUTORS = ("asyncio", "prefect_floor_sync", "prefect_floor_async", "planflow")
LABELS = {"asyncio": "plain asyncio", "prefect_floor_sync": "Prefect floor, sync tasks",
          "prefect_floor_async": "Prefect floor, async tasks", "planflow": "Planflow"}
GOAL = "Benchmark the dispatch cost of each dependency hop"


def chain_plan(n: int) -> dict[str, Any]:
    return {"tasks": [{"id": f"c{i}", "description": f"Do step {i} of the work.",
                       "depends_on": [f"c{i - 1}"] if i else []} for i in range(n)]}


def execute(name: str, plan: dict[str, Any], base_url: str, max_parallel: int, goal: str = GOAL) -> None:
    """Run `plan` with executor `name` (one of EXECUTORS) to the end."""
    if name == "asyncio":
        baselines.run_asyncio_blocking(plan, goal, base_url, max_parallel=max_parallel)
    elif name == "prefect_floor_sync":
        prefect_floor.run_prefect_sync(plan, goal, base_url, run_key=unique_key("floor-sync"), max_parallel=max_parallel)
    elif name == "prefect_floor_async":
        prefect_floor.run_prefect_async(plan, goal, base_url, run_key=unique_key("floor-async"),
                                        max_parallel=max_parallel)
    elif name == "planflow":
        run_flow(goal, plan, unique_key("dispatch"), max_parallel, base_url)
    else:
        raise ValueError(name)


def warm_floors(base_url: str) -> dict[str, float]:
    """One small run of each Prefect floor (their flows' first run registers them with the server)."""
    plan = layered_dag(4, width=2)
    seconds = {}
    for name in ("prefect_floor_sync", "prefect_floor_async"):
        t0 = time.monotonic()
        execute(name, plan, base_url, 4)
        seconds[name] = round(time.monotonic() - t0, 3)
    return seconds


def _hops(calls: list[Any], n: int) -> list[float]:
    by_node = {c.key: c for c in calls if (c.key or "").startswith("node:")}
    return [by_node[f"node:c{i + 1}"].started - by_node[f"node:c{i}"].finished for i in range(n - 1)]


def _span(calls: list[Any]) -> float:
    return max(c.finished for c in calls) - min(c.started for c in calls)


def run(out: Path, quick: bool) -> Result:
    chain_n, chain_latency = (6, 0.05) if quick else (20, 0.2)
    stress_n, stress_latency, stress_parallel = (20, 0.05, 10) if quick else (100, 0.05, 10)
    rounds = 1 if quick else 3
    result = Result("dispatch", quick, {
        "chain": {"n_nodes": chain_n, "latency_s": chain_latency, "max_parallel": 1},
        "stress": {"n_nodes": stress_n, "width": 10, "seed": 0, "latency_s": stress_latency,
                   "max_parallel": stress_parallel},
        "rounds": rounds, "executors": list(EXECUTORS),
    })
    chain = chain_plan(chain_n)
    stress = layered_dag(stress_n, width=10, seed=0)
    result["stress_dag"] = plan_stats(stress)
    hops: dict[str, list[float]] = {e: [] for e in EXECUTORS}
    chain_spans: dict[str, list[float]] = {e: [] for e in EXECUTORS}
    stress_spans: dict[str, list[float]] = {e: [] for e in EXECUTORS}
    stress_walls: dict[str, list[float]] = {e: [] for e in EXECUTORS}
    chain_server = latency_server(chain_latency)
    stress_server = latency_server(stress_latency)
    try:
        result["prefect_warmup"] = warm_prefect(chain_server.base_url)
        result["floor_warmup_s"] = warm_floors(chain_server.base_url)
        execute("asyncio", layered_dag(4, width=2), chain_server.base_url, 4)
        for rnd in range(rounds):
            for name in EXECUTORS:
                reset_server(chain_server)
                execute(name, chain, chain_server.base_url, 1)
                calls = chain_server.calls
                hops[name] += [round(h, 5) for h in _hops(calls, chain_n)]
                chain_spans[name].append(round(_span(calls), 4))
            for name in EXECUTORS:
                reset_server(stress_server)
                t0 = time.monotonic()
                execute(name, stress, stress_server.base_url, stress_parallel)
                stress_walls[name].append(round(time.monotonic() - t0, 4))
                stress_spans[name].append(round(_span(stress_server.calls), 4))
            log(f"dispatch round {rnd + 1}/{rounds}: hop p50 ms "
                + ", ".join(f"{n} {1000 * statistics.median(hops[n]):.1f}" for n in EXECUTORS)
                + "; stress makespan s " + ", ".join(f"{n} {stress_spans[n][-1]:.2f}" for n in EXECUTORS))
    finally:
        chain_server.stop()
        stress_server.stop()
    result["chain_hops_s"] = hops
    result["chain_span_s"] = chain_spans
    result["stress_span_s"] = stress_spans
    result["stress_wall_s"] = stress_walls
    hop_ms = {n: {"p50": round(1000 * percentile(hops[n], 50), 2), "p95": round(1000 * percentile(hops[n], 95), 2),
                  "max": round(1000 * max(hops[n]), 2), "n": len(hops[n])} for n in EXECUTORS}
    stress_median = {n: round(statistics.median(stress_spans[n]), 4) for n in EXECUTORS}
    floor = stress_median["prefect_floor_async"]
    result["summary"] = {
        "hop_ms": hop_ms,
        "hop_p95_over_asyncio_ms": {n: round(hop_ms[n]["p95"] - hop_ms["asyncio"]["p95"], 2) for n in EXECUTORS},
        "chain_span_s_median": {n: round(statistics.median(chain_spans[n]), 4) for n in EXECUTORS},
        "stress_makespan_s": stress_median,
        "stress_makespan_s_all": {n: describe(stress_spans[n]) for n in EXECUTORS},
        "stress_over_asyncio": {n: round(stress_median[n] / stress_median["asyncio"], 2) for n in EXECUTORS},
        "stress_over_floor_async": {n: round(stress_median[n] / floor, 2) for n in EXECUTORS},
        "targets": {
            "stress_planflow_over_floor_async_le_1.1": stress_median["planflow"] / floor <= 1.1,
            "hop_p95_within_20ms_of_asyncio": hop_ms["planflow"]["p95"] - hop_ms["asyncio"]["p95"] <= 20.0,
        },
    }
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    s = result["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    data = [[1000 * h for h in result["chain_hops_s"][n]] for n in EXECUTORS]
    left.boxplot(data, whis=(5, 95), showfliers=True)
    left.set_xticks(range(1, len(EXECUTORS) + 1), [LABELS[n].replace(", ", "\n") for n in EXECUTORS], fontsize=8)
    left.set_ylabel("ms, dependency's call end -> dependent's call start")
    p = result["params"]["chain"]
    left.set_title(f"Per-hop dispatch, {p['n_nodes']}-node chain, {int(p['latency_s'] * 1000)} ms/call")
    xs = range(len(EXECUTORS))
    right.bar(xs, [s["stress_makespan_s"][n] for n in EXECUTORS], color=["C2", "C1", "C0", "C3"])
    for x, n in zip(xs, EXECUTORS):
        right.annotate(f"{s['stress_over_asyncio'][n]}x", (x, s["stress_makespan_s"][n]), ha="center", va="bottom",
                       fontsize=8)
    right.set_xticks(list(xs), [LABELS[n].replace(", ", "\n") for n in EXECUTORS], fontsize=8)
    right.set_ylabel("makespan, s (first call in to last call out)")
    q = result["params"]["stress"]
    right.set_title(f"{q['n_nodes']}-node DAG, {int(q['latency_s'] * 1000)} ms/call, max_parallel={q['max_parallel']}")
    fig.tight_layout()
    fig.savefig(out / "dispatch.png", dpi=110)
    plt.close(fig)
