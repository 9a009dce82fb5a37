"""6. Plan quality: plans made by a model vs the gold DAGs of the dev set.

For a sample of dev requests, ask the model for a plan exactly as the flow does
(`planner.prompts.planning_messages`; with the embedded model, the relative
plan form of `planner.embedded_plan` under its grammar `relative_plan_schema(7)`
and sampling `EMBEDDED_PLAN_SAMPLING`; with any other endpoint,
`strict_json_schema(Plan)`; one retry with the compiler's error, as
`flows.tasks.make_plan` does), compile it with `planner.compiler.compile_plan`,
and compare it with the gold plan:

* node-count error: model tasks - gold tasks;
* edge F1: nodes are matched by position (the model's i-th task is the gold
  i-th task) and an edge is a (dependency position, task position) pair;
  two plans without edges score 1.0;
* repair rate: how often the compiler had to repair the plan (and of what kind).

A chain baseline (the model's task count, each task depending on the one
before) puts the edge F1 in context: most dev plans are chains.

Endpoint: the bundled SmolLM2 by default (one thread, see `run`); set BENCH_OPENAI_BASE_URL (and BENCH_OPENAI_API_KEY,
BENCH_MODEL) to grade another OpenAI-compatible model.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import Result, describe, log, pyplot
from benchmarks.data import load_dev

EMBEDDED_MAX_TASKS = 7  # flows.plan_and_execute.EMBEDDED_MAX_TASKS
SEED = 66
TIME_BUDGET_S = 1500  # full run: stop asking for more plans after this (the sample actually graded is reported)


def select(n: int) -> list[dict[str, Any]]:
    """Half DAG-shaped, half chain-shaped dev requests (2+ tasks), deterministic."""
    dev = sorted((r for r in load_dev() if r["n_nodes"] >= 2), key=lambda r: r["id"])
    rng = random.Random(SEED)
    dags = [r for r in dev if r["shape"] == "dag"]
    chains = [r for r in dev if r["shape"] == "chain"]
    picked = rng.sample(dags, (n + 1) // 2) + rng.sample(chains, n // 2)
    rng.shuffle(picked)
    return picked


def edges_by_position(tasks: list[tuple[str, tuple[str, ...]]]) -> set[tuple[int, int]]:
    position = {task_id: i for i, (task_id, _) in enumerate(tasks)}
    return {(position[d], position[t]) for t, deps in tasks for d in deps if d in position}


def f1(pred: set[tuple[int, int]], gold: set[tuple[int, int]]) -> tuple[float, float, float]:
    if not pred and not gold:
        return 1.0, 1.0, 1.0
    hit = len(pred & gold)
    precision = hit / len(pred) if pred else 0.0
    recall = hit / len(gold) if gold else 0.0
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score


def chain_edges(n: int) -> set[tuple[int, int]]:
    return {(i - 1, i) for i in range(1, n)}


async def _grade(
    records: list[dict[str, Any]], base_url: str, api_key: str, model: str, embedded: bool, budget_s: float | None
) -> list[dict[str, Any]]:
    from planner.compiler import compile_plan
    from planner.errors import PlanError
    from planner.llm import LLMClient
    from planner.embedded_plan import EMBEDDED_PLAN_SAMPLING, plan_from_relative, relative_plan_schema
    from planner.models import Plan, strict_json_schema
    from planner.prompts import planning_messages, planning_retry_messages
    from planner.settings import PlanflowSettings

    settings = PlanflowSettings()
    max_tasks = min(settings.max_tasks, EMBEDDED_MAX_TASKS) if embedded else settings.max_tasks
    schema = relative_plan_schema(max_tasks) if embedded else strict_json_schema(Plan)
    sampling = EMBEDDED_PLAN_SAMPLING if embedded else None
    client = LLMClient(base_url=base_url, api_key=api_key, model=model, timeout=300)
    rows = []
    started = time.monotonic()
    try:
        for i, record in enumerate(records):
            if budget_s is not None and time.monotonic() - started > budget_s:
                log(f"plan_quality: time budget of {budget_s:.0f} s spent after {i} plans; stopping")
                break
            gold = [(str(t["id"]), tuple(str(d) for d in t["depends_on"])) for t in record["tasks"]]
            row: dict[str, Any] = {"id": record["id"], "shape": record["shape"], "gold_nodes": len(gold)}
            t0 = time.monotonic()
            tokens = 0
            messages = planning_messages(record["request"], relative=embedded)
            compiled, error, retried = None, None, False
            for attempt in range(2):
                completion = await client.complete(messages, purpose="plan", max_tokens=settings.plan_max_tokens,
                                                   json_schema=schema, extra_body=sampling)
                tokens += completion.completion_tokens
                try:
                    text = plan_from_relative(completion.text) if embedded else completion.text
                    compiled = compile_plan(text, max_tasks=max_tasks)
                    break
                except PlanError as exc:
                    error = str(exc)
                    retried = attempt == 0
                    messages = planning_retry_messages(record["request"], completion.text, error, relative=embedded)
            row.update({"seconds": round(time.monotonic() - t0, 2), "completion_tokens": tokens, "retried": retried})
            if compiled is None:
                row.update({"compiled": False, "error": error})
            else:
                pred = [(t.id, t.depends_on) for t in compiled.plan.tasks]
                p, r, score = f1(edges_by_position(pred), edges_by_position(gold))
                _, _, chain_score = f1(chain_edges(len(pred)), edges_by_position(gold))
                row.update({
                    "compiled": True,
                    "pred_nodes": len(pred),
                    "node_count_error": len(pred) - len(gold),
                    "edge_precision": round(p, 4),
                    "edge_recall": round(r, 4),
                    "edge_f1": round(score, 4),
                    "chain_baseline_edge_f1": round(chain_score, 4),
                    "pred_edges": len(edges_by_position(pred)),
                    "gold_edges": len(edges_by_position(gold)),
                    "repairs": [rep.kind for rep in compiled.repairs],
                })
            rows.append(row)
            log(f"plan_quality {i + 1}/{len(records)} {record['id']}: gold {len(gold)} nodes, "
                f"model {row.get('pred_nodes', 'failed')}, F1 {row.get('edge_f1')}, repairs {row.get('repairs')}")
    finally:
        await client.aclose()
    return rows


def run(out: Path, quick: bool) -> Result:
    n = 1 if quick else 30
    base_url = os.environ.get("BENCH_OPENAI_BASE_URL")
    records = select(n)
    embedded_server, threads = None, None
    if base_url:
        api_key = os.environ.get("BENCH_OPENAI_API_KEY", "not-needed")
        model = os.environ.get("BENCH_MODEL", "gpt-4o-mini")
        embedded = model == "embedded"
    else:
        from planner.embedded import EmbeddedModelServer, EmbeddedServerConfig
        from planner.settings import PlanflowSettings

        settings = PlanflowSettings()
        # One thread, as first_answer: on a loaded 2-core box two llama.cpp threads wait on
        # each other at every token (measured 0.2 tokens/s per slot at load 9, against ~5
        # with one thread). Quality does not depend on speed; BENCH_EMBEDDED_THREADS overrides.
        threads = int(os.environ.get("BENCH_EMBEDDED_THREADS", "1"))
        embedded_server = EmbeddedModelServer(EmbeddedServerConfig(ctx_size=settings.embedded_ctx, threads=threads)).start()
        base_url, api_key, model, embedded = embedded_server.base_url, "embedded", embedded_server.model, True
    result = Result("plan_quality", quick, {"sample": n, "seed": SEED, "model": model,
                                            "endpoint": "embedded SmolLM2-135M" if embedded_server else "BENCH_OPENAI_BASE_URL",
                                            "schema": "relative_plan_schema(7)" if embedded else "strict_json_schema(Plan)",
                                            "embedded_threads": threads,
                                            "time_budget_s": None if quick else TIME_BUDGET_S})
    try:
        rows = asyncio.run(_grade(records, base_url, api_key, model, embedded, None if quick else TIME_BUDGET_S))
    finally:
        if embedded_server is not None:
            embedded_server.stop()
    ok = [r for r in rows if r["compiled"]]
    repaired = [r for r in ok if r["repairs"]]
    result["plans"] = rows
    result["summary"] = {
        "requests": len(rows),
        "compiled": len(ok),
        "compile_failure_rate": round(1 - len(ok) / len(rows), 4) if rows else None,
        "retry_rate": round(sum(r["retried"] for r in rows) / len(rows), 4) if rows else None,
        "repair_rate": round(len(repaired) / len(ok), 4) if ok else None,
        "repair_kinds": dict(Counter(k for r in ok for k in r["repairs"])),
        "node_count_error": describe([r["node_count_error"] for r in ok]),
        "abs_node_count_error": describe([abs(r["node_count_error"]) for r in ok]),
        "edge_f1": describe([r["edge_f1"] for r in ok]),
        "chain_baseline_edge_f1": describe([r["chain_baseline_edge_f1"] for r in ok]),
        "edge_f1_dag": describe([r["edge_f1"] for r in ok if r["shape"] == "dag"]),
        "edge_f1_chain": describe([r["edge_f1"] for r in ok if r["shape"] == "chain"]),
        "seconds_per_plan": describe([r["seconds"] for r in rows]),
    }
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    ok = [r for r in result["plans"] if r["compiled"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    if ok:
        gold = [r["gold_nodes"] for r in ok]
        pred = [r["pred_nodes"] for r in ok]
        jitter = random.Random(0)
        a.scatter([g + jitter.uniform(-0.15, 0.15) for g in gold], [p + jitter.uniform(-0.15, 0.15) for p in pred], alpha=0.6)
        top = max(gold + pred) + 1
        a.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1)
        a.set_xlabel("gold tasks")
        a.set_ylabel("model tasks")
        a.set_title("Task count")
        b.hist([[r["edge_f1"] for r in ok], [r["chain_baseline_edge_f1"] for r in ok]], bins=10, range=(0, 1),
               label=["model", "chain baseline"])
        b.set_xlabel("edge F1 vs gold (nodes matched by position)")
        b.set_ylabel("plans")
        b.legend()
    s = result["summary"]
    fig.suptitle(f"Plan quality: {result['params']['model']}, n={s['requests']}, repair rate {s['repair_rate']}")
    fig.tight_layout()
    fig.savefig(out / "plan_quality.png", dpi=110)
    plt.close(fig)
