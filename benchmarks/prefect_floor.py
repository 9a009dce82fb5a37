"""Prefect's floor: the least a Prefect flow can pay to run a plan DAG durably.

Two minimal executors doing the same model work as `benchmarks.baselines`
(same prompts, `execution_messages` with the dependencies' results only, same
completion cap, the same synthesis call for a plan with several sinks), but
each model call a persisted, cache-keyed Prefect task run inside a Prefect
flow run, against the same Prefect API as Planflow:

* `run_prefect_sync`: a sync flow; one sync task per node, `.submit()`ted on
  Prefect's default `ThreadPoolTaskRunner` the moment its last dependency has
  finished (at most `max_parallel` in flight), with the dependencies' futures as
  `wait_for` (so Prefect records the edges, as Planflow's UI graph needs); one
  shared sync `openai.OpenAI` client.
* `run_prefect_async`: an async flow; one async task per node awaited on the
  flow's event loop, each in its own asyncio task started as its dependencies
  finish, a semaphore of `max_parallel` around the task run, the dependencies'
  final states as `wait_for`; one shared `openai.AsyncOpenAI` client.

Each task run's result is persisted (Prefect's default local result storage) and
its cache key is a hash of the run key, the call's name and its messages, so a
re-run with the same run key is served from the cache as Planflow's nodes are.
What they leave out is Planflow's own: no ledger, no tags, no artifacts, no
retries, no replanning, no run-level bookkeeping. The gap between these and
Planflow is what Planflow adds on top of Prefect; the gap between these and
plain asyncio is Prefect's own per-task-run cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
from collections import deque
from typing import Any

import openai
from prefect import flow, task

from benchmarks.baselines import MAX_TOKENS, _node_messages, run_dag, synthesis_request
from planner.models import Plan

__all__ = ["run_prefect_async", "run_prefect_sync"]

_clients: dict[str, Any] = {}  # the flow run's shared client (one flow run at a time per process)


def _call_key(context: Any, parameters: dict[str, Any]) -> str:
    blob = json.dumps([parameters["run_key"], parameters["name"], parameters["model"], parameters["messages"]],
                      sort_keys=True)
    return "floor-" + hashlib.sha256(blob.encode()).hexdigest()


def _run_name(parameters: dict[str, Any]) -> str:
    return parameters["name"]


@task(name="floor-call", task_run_name=_run_name, persist_result=True, cache_key_fn=_call_key)
def _sync_call(run_key: str, name: str, model: str, messages: list[dict[str, str]]) -> str:
    client: openai.OpenAI = _clients["sync"]
    response = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
    return response.choices[0].message.content or ""


@task(name="floor-call", task_run_name=_run_name, persist_result=True, cache_key_fn=_call_key)
async def _async_call(run_key: str, name: str, model: str, messages: list[dict[str, str]]) -> str:
    client: openai.AsyncOpenAI = _clients["async"]
    response = await client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
    return response.choices[0].message.content or ""


@flow(name="prefect-floor-sync", persist_result=False)
def _sync_flow(plan: dict[str, Any], goal: str, base_url: str, run_key: str, max_parallel: int,
               model: str) -> dict[str, Any]:
    parsed = Plan.model_validate(plan)
    graph = parsed.graph
    _clients["sync"] = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=120)
    try:
        results: dict[str, str] = {}
        futures: dict[str, Any] = {}
        waiting = {n: len(graph.dependencies(n)) for n in graph.nodes}
        ready = deque(n for n in graph.topological_order() if waiting[n] == 0)
        in_flight: dict[concurrent.futures.Future[Any], str] = {}
        while ready or in_flight:
            while ready and len(in_flight) < max_parallel:
                node = ready.popleft()
                future = _sync_call.submit(run_key, f"node:{node}", model,
                                           _node_messages(parsed, goal, node, results),
                                           wait_for=[futures[d] for d in graph.dependencies(node)])
                futures[node] = future
                in_flight[future.wrapped_future] = node
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            for wrapped in done:
                node = in_flight.pop(wrapped)
                results[node] = futures[node].result()
                for child in graph.dependents(node):
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        ready.append(child)
        messages = synthesis_request(parsed, goal, results)
        answer = results[graph.sinks()[0]] if messages is None else _sync_call(run_key, "synthesis", model, messages)
        return {"answer": answer, "results": results}
    finally:
        _clients.pop("sync").close()


@flow(name="prefect-floor-async", persist_result=False)
async def _async_flow(plan: dict[str, Any], goal: str, base_url: str, run_key: str, max_parallel: int,
                      model: str) -> dict[str, Any]:
    parsed = Plan.model_validate(plan)
    graph = parsed.graph
    _clients["async"] = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=120)
    try:
        states: dict[str, Any] = {}

        async def call(node: str, results: dict[str, str]) -> str:
            state = await _async_call(run_key, f"node:{node}", model, _node_messages(parsed, goal, node, results),
                                      wait_for=[states[d] for d in graph.dependencies(node)], return_state=True)
            states[node] = state
            return await state.aresult()

        results = await run_dag(parsed, call, max_parallel=max_parallel)
        messages = synthesis_request(parsed, goal, results)
        answer = (results[graph.sinks()[0]] if messages is None
                  else await _async_call(run_key, "synthesis", model, messages))
        return {"answer": answer, "results": results}
    finally:
        await _clients.pop("async").close()


def run_prefect_sync(plan: dict[str, Any], goal: str, base_url: str, *, run_key: str, max_parallel: int,
                     model: str = "fake-model") -> dict[str, Any]:
    """Run the sync floor flow in this thread (no event loop may be running here)."""
    return _sync_flow(plan, goal, base_url, run_key, max_parallel, model)


def run_prefect_async(plan: dict[str, Any], goal: str, base_url: str, *, run_key: str, max_parallel: int,
                      model: str = "fake-model") -> dict[str, Any]:
    """Run the async floor flow on a fresh event loop (as `benchmarks.common.run_flow` runs Planflow's)."""
    return asyncio.run(_async_flow(plan, goal, base_url, run_key, max_parallel, model))
