"""Build `planner/data/plan_examples.jsonl.gz`: the dev plans the embedded planner may show.

`python -m benchmarks.example_pool` rewrites it. Every dev plan of 1-5 tasks whose
shape the relative form can say (see `planner.embedded_plan`), with a request of at
most 300 characters, except every plan `plan_quality` could grade (its sample for any
size up to `GRADED_MAX`). Ultratool's 2.5k near-identical chains are thinned to 300 so
they do not crowd out the rest. Descriptions are cut to 150 characters.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

from benchmarks.common import REPO_ROOT
from benchmarks.data import load_dev
from benchmarks.plan_quality import select

POOL_PATH = REPO_ROOT / "planner" / "data" / "plan_examples.jsonl.gz"
GRADED_MAX = 60
ULTRATOOL_KEEP = 300


def graded_ids() -> set[str]:
    return {r["id"] for n in range(1, GRADED_MAX + 1) for r in select(n)}


def build(path: Path = POOL_PATH) -> int:
    from planner.embedded_plan import relative_example

    excluded = graded_ids()
    rows = []
    for record in sorted(load_dev(), key=lambda r: r["id"]):
        if record["id"] in excluded or not 1 <= record["n_nodes"] <= 5 or len(record["request"]) > 300:
            continue
        position = {str(t["id"]): f"t{i}" for i, t in enumerate(record["tasks"], 1)}
        tasks = [(" ".join(t["description"].split())[:150], tuple(position[str(d)] for d in t["depends_on"]))
                 for t in record["tasks"]]
        try:
            relative_example(tasks)
        except (ValueError, KeyError):
            continue
        rows.append({"id": record["id"], "request": " ".join(record["request"].split()),
                     "tasks": [[d, list(deps)] for d, deps in tasks]})
    ultra = [r for r in rows if r["id"].startswith("ultratool:")]
    keep = set(r["id"] for r in random.Random(0).sample(ultra, min(ULTRATOOL_KEEP, len(ultra))))
    rows = [r for r in rows if not r["id"].startswith("ultratool:") or r["id"] in keep]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as raw:
        raw.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    return len(rows)


if __name__ == "__main__":
    print(f"{build()} plans written to {POOL_PATH}")
