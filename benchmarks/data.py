"""The plan DAGs the benchmarks run: real ones from benchmarks/data, and synthetic layered ones."""

from __future__ import annotations

import gzip
import json
import os
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT

__all__ = ["DATA_DIR", "dev_path", "layered_dag", "load_dev", "plan_of", "plan_stats"]


DATA_DIR = REPO_ROOT / "benchmarks" / "data"


def dev_path() -> Path:
    """The dev plans: `benchmarks/data/dev.jsonl.gz`, shipped with the repository.

    `$PLANFLOW_BENCHDATA` names another folder holding `dev.jsonl` (or `dev.jsonl.gz`).
    """
    override = os.environ.get("PLANFLOW_BENCHDATA")
    if not override:
        return DATA_DIR / "dev.jsonl.gz"
    base = Path(override)
    plain, packed = base / "dev.jsonl", base / "dev.jsonl.gz"
    return packed if packed.is_file() and not plain.is_file() else plain


@lru_cache(maxsize=1)
def _load(path: str) -> tuple[dict[str, Any], ...]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def load_dev() -> list[dict[str, Any]]:
    """Every dev record (see benchmarks/data/README.md for the format)."""
    path = dev_path()
    if not path.exists():
        raise FileNotFoundError(f"benchmark plan data not found at {path} (PLANFLOW_BENCHDATA names its folder)")
    return list(_load(str(path)))


def plan_of(record: dict[str, Any]) -> dict[str, Any]:
    """A benchdata record's gold DAG as a plan file `{"tasks": [...]}`."""
    return {
        "tasks": [
            {"id": str(t["id"]), "description": t["description"], "depends_on": [str(d) for d in t["depends_on"]]}
            for t in record["tasks"]
        ]
    }


def plan_stats(plan: dict[str, Any]) -> dict[str, int]:
    """Nodes, edges, depth (critical path in nodes), max width and sinks of a plan."""
    from planner.graph import DependencyGraph

    graph = DependencyGraph({t["id"]: tuple(t["depends_on"]) for t in plan["tasks"]})
    waves = graph.waves()
    return {
        "n_nodes": len(graph),
        "n_edges": sum(len(t["depends_on"]) for t in plan["tasks"]),
        "depth": len(graph.critical_path()),
        "max_width": max((len(w) for w in waves), default=0),
        "n_sinks": len(graph.sinks()),
    }


def layered_dag(n: int, width: int = 10, seed: int = 0) -> dict[str, Any]:
    """A deterministic random DAG of exactly `n` nodes: layers of `width`, one final sink.

    Each node after the first layer depends on 1-3 random nodes of the layer
    before it (and, one time in five, on one node of an earlier layer). The last
    node depends on every node nothing else depends on, so the plan has one sink
    and its result is the answer (no synthesis call).
    """
    if n < 2:
        return {"tasks": [{"id": "n0", "description": "Do step 0 of the work.", "depends_on": []}]}
    rng = random.Random(seed * 100_003 + n)
    body = n - 1
    layers: list[list[str]] = []
    tasks: list[dict[str, Any]] = []
    for i in range(body):
        if i % width == 0:
            layers.append([])
        node = f"n{i}"
        deps: list[str] = []
        if len(layers) > 1:
            prev = layers[-2]
            deps = rng.sample(prev, k=min(len(prev), rng.randint(1, 3)))
            if len(layers) > 2 and rng.random() < 0.2:
                extra = rng.choice(rng.choice(layers[:-2]))
                if extra not in deps:
                    deps.append(extra)
        layers[-1].append(node)
        tasks.append({"id": node, "description": f"Do step {i} of the work.", "depends_on": sorted(deps)})
    used = {d for t in tasks for d in t["depends_on"]}
    sinks = [t["id"] for t in tasks if t["id"] not in used]
    tasks.append({"id": "final", "description": "Combine the results into the answer.", "depends_on": sinks})
    return {"tasks": tasks}
