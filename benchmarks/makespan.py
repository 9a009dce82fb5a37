"""2. Parallel makespan: how close each executor gets to the critical-path bound.

Every model call takes a fixed latency. A DAG whose longest dependency chain
has `depth` nodes cannot finish in less than depth x latency, so
makespan / (depth x latency) is 1.0 at best. Measured on the model server's
clock: from the first call's arrival to the last node call's answer (so the
flow's own set-up before the first call is not counted; the whole executor call
is reported too, as `wall`). A plan with several sinks also gets a synthesis
call after its nodes, in every executor; it is outside the node span and
inside `wall`, whose bound is (depth + 1) x latency then.

Beside Planflow and the plain loops, Prefect's floor (`benchmarks.prefect_floor`):
a minimal flow with one persisted, cache-keyed task per node, sync tasks on the
thread pool and async tasks on the flow's loop, the same `max_parallel`.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from benchmarks import baselines, prefect_floor
from benchmarks._server import latency_server, reset_server
from benchmarks.common import Result, describe, log, pyplot, run_flow, unique_key, warm_prefect
from benchmarks.data import load_dev, plan_of, plan_stats

MAX_PARALLEL = 16  # above the widest dev DAG (13), so parallelism is bounded by the DAG only
EXECUTORS = ("planflow", "asyncio", "sequential", "prefect_floor_sync", "prefect_floor_async")
LABELS = ("Planflow", "asyncio", "sequential", "Prefect floor\nsync", "Prefect floor\nasync")


def select(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Dev DAGs with max_width >= 3 and a sample of chains, deterministically sampled."""
    dev = load_dev()
    wide = sorted((r for r in dev if r["max_width"] >= 3), key=lambda r: r["id"])
    chains = sorted((r for r in dev if r["shape"] == "chain" and r["n_nodes"] >= 3), key=lambda r: r["id"])
    n_wide, n_chain = (3, 1) if quick else (80, 30)
    rng = random.Random(6)
    picked = rng.sample(wide, min(n_wide, len(wide))) + rng.sample(chains, min(n_chain, len(chains)))
    info = {"dags_with_width_ge_3_in_dev": len(wide), "dags_sampled": min(n_wide, len(wide)),
            "chains_with_3plus_nodes_in_dev": len(chains), "chains_sampled": min(n_chain, len(chains)), "seed": 6}
    return picked, info


def _span(calls: list[Any]) -> float:
    nodes = [c for c in calls if (c.key or "").startswith("node:")]
    return max(c.finished for c in nodes) - min(c.started for c in calls)


def _baseline(base_url: str, plan: dict[str, Any], goal: str, sequential: bool) -> None:
    async def main() -> None:
        client = baselines.make_client(base_url)
        try:
            if sequential:
                await baselines.run_sequential(plan, goal, client)
            else:
                await baselines.run_asyncio(plan, goal, client, max_parallel=MAX_PARALLEL)
        finally:
            await client.close()

    asyncio.run(main())


def run(out: Path, quick: bool) -> Result:
    latency = 0.05 if quick else 0.2
    records, sample = select(quick)
    result = Result("makespan", quick, {"latency_s": latency, "max_parallel": MAX_PARALLEL, "sample": sample})
    server = latency_server(latency)
    try:
        result["prefect_warmup"] = warm_prefect(server.base_url)
        for floor in (prefect_floor.run_prefect_sync, prefect_floor.run_prefect_async):  # register the floors' flows
            floor(plan_of(records[0]), "warm up", server.base_url, run_key=unique_key("floor-warm"),
                  max_parallel=MAX_PARALLEL)
        rows = []
        for i, record in enumerate(records):
            plan = plan_of(record)
            stats = plan_stats(plan)
            goal = record["request"][:2000] or "Carry out the plan"
            row: dict[str, Any] = {"id": record["id"], "shape": record["shape"], **stats}
            synth = 1 if stats["n_sinks"] > 1 else 0
            for name in EXECUTORS:
                reset_server(server)
                t0 = time.monotonic()
                try:
                    if name == "planflow":
                        run_flow(goal, plan, unique_key("makespan"), MAX_PARALLEL, server.base_url)
                    elif name == "prefect_floor_sync":
                        prefect_floor.run_prefect_sync(plan, goal, server.base_url, run_key=unique_key("floor"),
                                                       max_parallel=MAX_PARALLEL)
                    elif name == "prefect_floor_async":
                        prefect_floor.run_prefect_async(plan, goal, server.base_url, run_key=unique_key("floor"),
                                                        max_parallel=MAX_PARALLEL)
                    else:
                        _baseline(server.base_url, plan, goal, sequential=name == "sequential")
                except Exception as exc:  # noqa: BLE001 - a failed run is a finding, not the end of the benchmark
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    log(f"makespan {record['id']}: {name} failed: {row[name]['error']}")
                    continue
                wall = time.monotonic() - t0
                span = _span(server.calls)
                row[name] = {
                    "span_s": round(span, 4),
                    "wall_s": round(wall, 4),
                    "span_ratio": round(span / (stats["depth"] * latency), 4),
                    "wall_ratio": round(wall / ((stats["depth"] + synth) * latency), 4),
                    "calls": len(server.calls),
                }
            rows.append(row)
            if i % 10 == 0 or quick:
                log(f"makespan {i + 1}/{len(records)} {record['id']} depth={stats['depth']} width={stats['max_width']}: "
                    + ", ".join(f"{n} {row[n].get('span_ratio', 'failed')}" for n in EXECUTORS))
        result["dags"] = rows
        ok = [r for r in rows if all("error" not in r[name] for name in EXECUTORS)]
        summary: dict[str, Any] = {
            "failed_runs": {name: [r["id"] for r in rows if "error" in r[name]] for name in EXECUTORS},
            "note": "ratios are over the plans all executors completed",
        }
        for group, members in (("dag", [r for r in ok if r["shape"] == "dag"]),
                               ("chain", [r for r in ok if r["shape"] == "chain"])):
            summary[group] = {
                name: {
                    "span_ratio": describe([r[name]["span_ratio"] for r in members]),
                    "wall_ratio": describe([r[name]["wall_ratio"] for r in members]),
                }
                for name in EXECUTORS
            }
            # per plan, Planflow's node span over the async Prefect floor's
            summary[group]["planflow_over_floor_async"] = describe(
                [r["planflow"]["span_s"] / r["prefect_floor_async"]["span_s"] for r in members])
        result["summary"] = summary
    finally:
        server.stop()
    _plot(result, out, latency)
    result.write(out)
    return result



def _plot(result: Result, out: Path, latency: float) -> None:
    plt = pyplot()
    rows = [r for r in result["dags"] if all("error" not in r[name] for name in EXECUTORS)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for ax, shape in zip(axes, ("dag", "chain")):
        members = [r for r in rows if r["shape"] == shape]
        if not members:
            continue
        data = [[r[name]["span_ratio"] for r in members] for name in EXECUTORS]
        ax.boxplot(data, whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(EXECUTORS) + 1), LABELS, fontsize=8)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{'DAGs, max width >= 3' if shape == 'dag' else 'chains'} (n={len(members)})")
        ax.set_yscale("log")
    axes[0].set_ylabel("makespan / (critical path x latency)")
    fig.suptitle(f"Parallel makespan, {int(latency * 1000)} ms per call (1.0 = critical-path bound; whiskers p5-p95)")
    fig.tight_layout()
    fig.savefig(out / "makespan.png", dpi=110)
    plt.close(fig)
