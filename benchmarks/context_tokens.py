"""4. Context tokens: dependencies-only context vs passing every earlier result.

Pure computation, no model and no Prefect: for every dev plan with 3 or more
tasks, build each node's prompt with `planner.prompts.execution_messages` twice,
once with its direct dependencies' results (what Planflow sends) and once with
the results of every task before it in topological order (the naive agent loop
that keeps a growing scratchpad), and count the prompt tokens.

Tokens are counted as the fake model server counts them: whitespace-separated
words of every message's content (system + user). Real BPE token counts run
about 1.3x higher for English; the ratio between the two approaches is what
matters. Each result is a deterministic 400-character text (about 70 words).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._server import result_text, words
from benchmarks.common import Result, describe, pyplot
from benchmarks.data import load_dev, plan_of

RESULT_CHARS = 400
CONTEXT_CHARS = 4000  # PlanflowSettings().context_chars default


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    return sum(words(m["content"]) for m in messages)


def plan_tokens(record: dict[str, Any]) -> tuple[int, int]:
    """(dependencies-only, naive) prompt tokens summed over the plan's nodes."""
    from planner.models import Plan
    from planner.prompts import execution_messages

    plan = Plan.model_validate(plan_of(record))
    goal = record["request"]
    results = {t.id: result_text(f"node:{t.id}", RESULT_CHARS) for t in plan.tasks}
    deps_total = naive_total = 0
    earlier: list[str] = []
    for node in plan.graph.topological_order():
        task = plan.by_id[node]
        deps = {d: results[d] for d in task.depends_on}
        naive = {d: results[d] for d in earlier}
        deps_total += prompt_tokens(execution_messages(goal, task, deps, plan.by_id, CONTEXT_CHARS))
        naive_total += prompt_tokens(execution_messages(goal, task, naive, plan.by_id, CONTEXT_CHARS))
        earlier.append(node)
    return deps_total, naive_total


def run(out: Path, quick: bool) -> Result:
    records = [r for r in load_dev() if r["n_nodes"] >= 3]
    result = Result("context_tokens", quick, {"result_chars": RESULT_CHARS, "context_chars": CONTEXT_CHARS,
                                              "token_count": "whitespace words of all message contents "
                                              "(as tests/support/fake_openai.py counts)",
                                              "plans": len(records), "min_nodes": 3})
    rows = []
    for record in records:  # all of them even in --quick: it takes a few seconds
        deps, naive = plan_tokens(record)
        rows.append({"id": record["id"], "shape": record["shape"], "n_nodes": record["n_nodes"],
                     "deps_tokens": deps, "naive_tokens": naive, "ratio": round(naive / deps, 4)})
    summary: dict[str, Any] = {}
    for group in ("all", "dag", "chain"):
        members = [r for r in rows if group == "all" or r["shape"] == group]
        if not members:
            continue
        deps_sum = sum(r["deps_tokens"] for r in members)
        naive_sum = sum(r["naive_tokens"] for r in members)
        summary[group] = {
            "plans": len(members),
            "deps_tokens_total": deps_sum,
            "naive_tokens_total": naive_sum,
            "naive_over_deps": round(naive_sum / deps_sum, 4),
            "saved_fraction": round(1 - deps_sum / naive_sum, 4),
            "per_plan_ratio": describe([r["ratio"] for r in members]),
        }
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_size[r["n_nodes"]].append(r)
    result["by_n_nodes"] = {
        str(n): {"plans": len(v), "mean_deps_tokens": round(sum(r["deps_tokens"] for r in v) / len(v), 1),
                 "mean_naive_tokens": round(sum(r["naive_tokens"] for r in v) / len(v), 1)}
        for n, v in sorted(by_size.items())
    }
    result["summary"] = summary
    result["plans"] = rows
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    by = result["by_n_nodes"]
    sizes = [int(n) for n in by]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    a.plot(sizes, [by[str(n)]["mean_naive_tokens"] for n in sizes], "o-", label="naive: all earlier results")
    a.plot(sizes, [by[str(n)]["mean_deps_tokens"] for n in sizes], "o-", label="Planflow: dependencies only")
    a.set_xlabel("tasks in plan")
    a.set_ylabel("prompt tokens per plan (mean)")
    a.set_title("Prompt tokens per plan, 400-char results")
    a.legend()
    rows = result["plans"]
    for shape in ("chain", "dag"):
        b.hist([r["ratio"] for r in rows if r["shape"] == shape], bins=30, alpha=0.6, label=shape)
    b.set_xlabel("naive tokens / dependencies-only tokens (per plan)")
    b.set_ylabel("plans")
    b.set_title(f"{len(rows)} dev plans with >= 3 tasks")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "context_tokens.png", dpi=110)
    plt.close(fig)
