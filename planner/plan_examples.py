"""Few-shot plans for the planner prompt, taken from the dev plan data.

Each is a request and its gold plan from `benchmarks/data/dev.jsonl.gz`
(WorFBench, MIT; see benchmarks/data/README.md), with positional ids (t1, t2, ...)
as `positional_plan_schema` writes them and descriptions lightly shortened. They
are short on purpose (a 135M model copies length as much as form) and show the
two shapes a plan takes: a chain, and independent steps joined by a later one.
None of them is in `benchmarks/plan_quality.py`'s graded sample (a test checks it).

The embedded model also gets `EMBEDDED_PLAN_EXAMPLES`, which adds a plan of two
independent steps (the commonest DAG shape in the dev data: separate asks in one
request) and orders them chain, independent, join, join-then-chain.
"""

from __future__ import annotations

import json

__all__ = ["EMBEDDED_PLAN_EXAMPLES", "PLAN_EXAMPLES", "example_plan_json"]

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

_INDEPENDENT = (
    "worfbench:toolbench_73",
    "I'm feeling down and could use a good laugh. Can you give me a random Chuck Norris joke "
    "and a funny programming meme to brighten my day?",
    (
        ("Fetch a random Chuck Norris joke.", ()),
        ("Fetch a funny programming meme.", ()),
    ),
)

EMBEDDED_PLAN_EXAMPLES = (PLAN_EXAMPLES[0], _INDEPENDENT, *PLAN_EXAMPLES[1:])


def example_plan_json(tasks: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """An example's plan as the planner must answer it (compact JSON)."""
    return json.dumps(
        {"tasks": [{"id": f"t{i}", "description": d, "depends_on": list(deps)} for i, (d, deps) in enumerate(tasks, 1)]}
    )
