"""Content-addressed cache keys for plan nodes, the planning step and synthesis.

A key changes exactly when the work would change. In the key, and why:

* run key: two runs never share results, even for the same goal (a user who
  wants a fresh answer picks a new key);
* node id: two identical tasks in one plan are still two pieces of work;
* goal, description, model, prompt version: any of them changes the prompt or
  who answers it, so the old result is no longer the answer;
* upstream results: a node re-runs when what it was given changes (after a
  replan, say); a replayed (cached) upstream yields the same text, so resume
  replays the whole finished sub-graph.

Left out on purpose: timestamps, attempt counts, retry settings and
parallelism, which change how work is done, not what it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

__all__ = ["node_cache_key", "plan_cache_key", "replan_cache_key", "synthesis_cache_key"]


def _digest(payload: object) -> str:
    data = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:32]


def _safe(run_key: str) -> str:
    # Keys double as file names in Prefect's local result storage; the digest
    # carries the exact run key, this readable prefix only helps people.
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in run_key)[:80]


def node_cache_key(
    *,
    run_key: str,
    node_id: str,
    goal: str,
    description: str,
    model: str,
    prompt_version: str,
    upstream_results: Mapping[str, str],
) -> str:
    digest = _digest(
        {
            "run_key": run_key,
            "node_id": node_id,
            "goal": goal,
            "description": description,
            "model": model,
            "prompt_version": prompt_version,
            "upstream": dict(upstream_results),
        }
    )
    return f"planflow-node-{_safe(run_key)}-{_safe(node_id)}-{digest}"


def plan_cache_key(
    *, run_key: str, goal: str, model: str, prompt_version: str, max_tasks: int, schema: str = "open"
) -> str:
    digest = _digest(
        {
            "run_key": run_key,
            "goal": goal,
            "model": model,
            "prompt_version": prompt_version,
            "max_tasks": max_tasks,
            "schema": schema,
        }
    )
    return f"planflow-plan-{_safe(run_key)}-{digest}"


def synthesis_cache_key(
    *, run_key: str, goal: str, model: str, prompt_version: str, sink_results: Mapping[str, str]
) -> str:
    digest = _digest(
        {"run_key": run_key, "goal": goal, "model": model, "prompt_version": prompt_version, "sinks": dict(sink_results)}
    )
    return f"planflow-answer-{_safe(run_key)}-{digest}"


def replan_cache_key(*, run_key: str, version: int, spec: Mapping[str, object]) -> str:
    """A replan is keyed by its whole failure context (plan, results, error, model, prompts)."""
    digest = _digest({"run_key": run_key, "version": version, "spec": dict(spec)})
    return f"planflow-replan-{_safe(run_key)}-v{version}-{digest}"
