"""Few-shot plans for the planner prompt, taken from the dev plan data.

Each is a request and its gold plan from `benchmarks/data/dev.jsonl.gz`
(WorFBench, MIT; see benchmarks/data/README.md), with positional ids (t1, t2, ...)
as `positional_plan_schema` writes them and descriptions lightly shortened. They
are short on purpose (a 135M model copies length as much as form) and show the
two shapes a plan takes: a chain, and independent steps joined by a later one.
None of them is in `benchmarks/plan_quality.py`'s graded sample (a test checks it).

The embedded model is shown other examples: the three dev plans whose requests
are nearest its goal (`nearest_examples`), from a pool that leaves out every plan
plan_quality could grade. A 135M model copies the shape of what it is shown far
more than it reasons about dependencies, and a request of the same kind (separate
asks, a lookup then an action, a how-to) most often has the same shape.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

__all__ = ["PLAN_EXAMPLES", "POOL_PATH", "example_plan_json", "example_pool", "nearest_examples"]

# (source id, request, [(description, depends_on), ...])
PLAN_EXAMPLES: tuple[tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    (
        "worfbench:lumos_43",
        "Where on a map is the river serving as the mouth of Deer Creek?",
        (
            ("Identify the river serving as the mouth of Deer Creek.", ()),
            ("Determine where the identified river is located on a map.", ("t1",)),
        ),
    ),
    (
        "worfbench:lumos_19469",
        "Vlad is 6 feet, 3 inches tall. His younger sister is 2 feet, 10 inches tall. "
        "How many inches taller is Vlad than his sister?",
        (
            ("Convert Vlad's height from feet to inches.", ()),
            ("Convert Vlad's sister's height from feet to inches.", ()),
            ("Calculate the difference in height between Vlad and his sister.", ("t1", "t2")),
        ),
    ),
    (
        "worfbench:intercodesql_145",
        "How many matches were played in 2013 or 2016?",
        (
            ("Filter the matches where the year is 2013.", ()),
            ("Filter the matches where the year is 2016.", ()),
            ("Combine the results from both filters.", ("t1", "t2")),
            ("Count the total number of matches in the combined results.", ("t3",)),
        ),
    ),
)

def example_plan_json(tasks: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """An example's plan as the planner must answer it (compact JSON)."""
    return json.dumps(
        {"tasks": [{"id": f"t{i}", "description": d, "depends_on": list(deps)} for i, (d, deps) in enumerate(tasks, 1)]}
    )


POOL_PATH = Path(__file__).resolve().parent / "data" / "plan_examples.jsonl.gz"
"""Dev plans the embedded planner may show, none of them gradable by plan_quality
(built by `python -m benchmarks.example_pool`, which says which are left out)."""

Example = tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]]
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 2]


@lru_cache(maxsize=1)
def example_pool() -> tuple[tuple[Example, ...], dict[str, float], tuple[Counter[str], ...]]:
    """The pool, each word's idf, and each request's word counts (loaded once)."""
    with gzip.open(POOL_PATH, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    examples = tuple(
        (r["id"], r["request"], tuple((d, tuple(deps)) for d, deps in r["tasks"])) for r in rows
    )
    counts = tuple(Counter(_words(r["request"])) for r in rows)
    df = Counter(w for c in counts for w in c)
    idf = {w: math.log(len(rows) / n) + 1.0 for w, n in df.items()}
    return examples, idf, counts


def nearest_examples(goal: str, k: int = 3) -> tuple[Example, ...]:
    """The `k` pool plans whose requests are most like `goal` (tf-idf cosine), closest last.

    A small model copies the shape of the plans it is shown: a request like the goal
    (the same kind of ask) most often has the shape the goal needs.
    """
    examples, idf, counts = example_pool()
    query = Counter(_words(goal))

    def vector_norm(c: Counter[str]) -> float:
        return math.sqrt(sum((n * idf.get(w, 0.0)) ** 2 for w, n in c.items())) or 1.0

    q_norm = vector_norm(query)
    scored = []
    for i, c in enumerate(counts):
        dot = sum(n * c[w] * idf.get(w, 0.0) ** 2 for w, n in query.items() if w in c)
        scored.append((dot / (q_norm * vector_norm(c)), -i))
    best = sorted(scored, reverse=True)[:k]
    return tuple(examples[-neg] for _, neg in reversed(best))
