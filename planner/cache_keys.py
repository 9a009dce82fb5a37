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

Inside a node with tools, each model turn is keyed by the messages it sends and
the tools it offers (the step number only names it), and each tool call by its
step, its place in the turn, the tool and the exact arguments: on resume the
same conversation replays turn by turn, and a finished call is never repeated.

A node's rerun version (`planner.rerun`: the plan version that last invalidated
it, when a person asked to rerun it) is in its keys, its turns' and its tool
calls' keys, and in the synthesis key, so the rerun really runs; it is left out
when 0, so every key made before reruns existed is unchanged (a resume of an
older run still replays).

Left out on purpose: timestamps, attempt counts, retry settings and
parallelism, which change how work is done, not what it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

__all__ = [
    "idempotency_key",
    "node_cache_key",
    "plan_cache_key",
    "replan_cache_key",
    "synthesis_cache_key",
    "tool_call_cache_key",
    "turn_cache_key",
]


def _digest(payload: object) -> str:
    data = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:32]


def _safe(run_key: str) -> str:
    # Keys double as file names in Prefect's local result storage; the digest
    # carries the exact run key, this readable prefix only helps people.
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in run_key)[:80]


def _add_rerun(payload: dict[str, object], rerun_version: int) -> dict[str, object]:
    if rerun_version:  # only nodes a person reran: every other key stays as it was
        payload["rerun_version"] = rerun_version
    return payload


def node_cache_key(
    *,
    run_key: str,
    node_id: str,
    goal: str,
    description: str,
    model: str,
    prompt_version: str,
    upstream_results: Mapping[str, str],
    tools: Sequence[str] = (),
    max_steps: int | None = None,
    rerun_version: int = 0,
) -> str:
    payload: dict[str, object] = {
        "run_key": run_key,
        "node_id": node_id,
        "goal": goal,
        "description": description,
        "model": model,
        "prompt_version": prompt_version,
        "upstream": dict(upstream_results),
    }
    if tools:  # only nodes that may act: the keys of tool-less nodes stay as they were
        payload["tools"] = sorted(tools)
        payload["max_steps"] = max_steps
    _add_rerun(payload, rerun_version)
    return f"planflow-node-{_safe(run_key)}-{_safe(node_id)}-{_digest(payload)}"


def turn_cache_key(
    *,
    run_key: str,
    node_id: str,
    step: int,
    messages: Sequence[Mapping[str, object]],
    tools: Sequence[str],
    model: str,
    rerun_version: int = 0,
) -> str:
    """One model turn of a node's tool loop: what it is asked decides what it answers."""
    payload = {"run_key": run_key, "node_id": node_id, "messages": list(messages), "tools": sorted(tools), "model": model}
    digest = _digest(_add_rerun(payload, rerun_version))
    return f"planflow-turn-{_safe(run_key)}-{_safe(node_id)}-s{step}-{digest}"


def tool_call_cache_key(
    *, run_key: str, node_id: str, step: int, index: int, tool: str, arguments: str, rerun_version: int = 0
) -> str:
    """One tool call: its place in the node's conversation and exactly what was asked."""
    payload = {"run_key": run_key, "node_id": node_id, "step": step, "index": index, "tool": tool, "arguments": arguments}
    digest = _digest(_add_rerun(payload, rerun_version))
    return f"planflow-tool-{_safe(run_key)}-{_safe(node_id)}-s{step}c{index}-{digest}"


def idempotency_key(*, run_key: str, node_id: str, step: int, index: int, rerun_version: int = 0) -> str:
    """The same for one call across resumes, so a tool can pass it to a payment API or a queue;
    a new one in a rerun, which asks for the effect again."""
    payload = {"run_key": run_key, "node_id": node_id, "step": step, "index": index}
    return "planflow-" + _digest(_add_rerun(payload, rerun_version))


def plan_cache_key(
    *,
    run_key: str,
    goal: str,
    model: str,
    prompt_version: str,
    max_tasks: int,
    schema: str = "open",
    tools: Sequence[Sequence[str]] = (),
) -> str:
    """`tools`: the catalogue the planner is shown, (name, one line) each; it is in the
    prompt, so it is in the key, but only when there is one (tool-less keys stay as they were)."""
    payload: dict[str, object] = {
        "run_key": run_key,
        "goal": goal,
        "model": model,
        "prompt_version": prompt_version,
        "max_tasks": max_tasks,
        "schema": schema,
    }
    if tools:
        payload["tools"] = [list(entry) for entry in tools]
    return f"planflow-plan-{_safe(run_key)}-{_digest(payload)}"


def synthesis_cache_key(
    *, run_key: str, goal: str, model: str, prompt_version: str, sink_results: Mapping[str, str], rerun_version: int = 0
) -> str:
    """`rerun_version`: the latest among the sinks; a rerun writes the answer again even
    when the rerun tasks said the same as before."""
    payload = {"run_key": run_key, "goal": goal, "model": model, "prompt_version": prompt_version, "sinks": dict(sink_results)}
    digest = _digest(_add_rerun(payload, rerun_version))
    return f"planflow-answer-{_safe(run_key)}-{digest}"


def replan_cache_key(*, run_key: str, version: int, spec: Mapping[str, object]) -> str:
    """A replan is keyed by its whole failure context (plan, results, error, model, prompts)."""
    digest = _digest({"run_key": run_key, "version": version, "spec": dict(spec)})
    return f"planflow-replan-{_safe(run_key)}-v{version}-{digest}"
