"""What the task-run page reads (flows/ui_fields.py), read back through Prefect's API
after a real run: every task run carries its cache key, and Retry Delay is a number
while the engine still backs off along the whole list."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.fake_openai import Reply
from support.flows import plan_json, run_flow

from flows.tasks import retry_options
from planner.settings import PlanflowSettings


def task_runs_of(run_key: str, ledger, settled: int) -> list[Any]:
    """The flow run's task runs once `settled` of them are final: the server records
    state events a moment after the flow returns."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = ledger.run(run_key).flow_run_id
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) >= settled or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def logged(task_run_id: Any, text: str) -> bool:
    """Whether the task run's logs (shipped to the API in batches) come to contain `text`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])))
            if any(text in log.message for log in logs) or time.monotonic() > deadline:
                return any(text in log.message for log in logs)
            time.sleep(0.5)


def test_every_task_run_shows_its_cache_key_and_a_retry_delay(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", [])))
    fake_llm.script("node:b", Reply(status=503), "b at last")
    state, result = run_flow("shown", run_key=run_key, max_retries=3)
    assert state.is_completed(), result
    runs = task_runs_of(run_key, ledger, settled=6)
    prefixes = {  # each kind of task run and the key it is stored under (planner/cache_keys.py)
        "plan": f"planflow-plan-{run_key}-",
        "a: do a": f"planflow-node-{run_key}-a-",
        "b: do b": f"planflow-node-{run_key}-b-",
        "c: do c": f"planflow-node-{run_key}-c-",
        # a node's first turn is asked directly; b's failed, so b's retry asked it as a step of its own
        "b: step 1": f"planflow-turn-{run_key}-b-s1-",
        "synthesize answer": f"planflow-answer-{run_key}-",
    }
    assert sorted(r.name for r in runs) == sorted(prefixes)
    first_delay = PlanflowSettings().retry_backoff
    for task_run in runs:
        assert task_run.state.is_completed(), (task_run.name, task_run.state)
        assert (task_run.cache_key or "").startswith(prefixes[task_run.name]), (task_run.name, task_run.cache_key)
        policy = task_run.empirical_policy
        retries = 2 if task_run.name == "b: step 1" else 3  # the step has the tries its node had left
        assert policy.retries == retries and policy.retry_delay == pytest.approx(first_delay), (task_run.name, policy)
    assert len({r.cache_key for r in runs}) == len(runs)
    # b's node retried once; its log says how long it waited (what one number cannot).
    (retried,) = [r for r in runs if r.run_count > 1]
    assert (retried.name, retried.run_count) == ("b: do b", 2)
    assert logged(retried.id, "Retry 1/3 will start")


def test_a_resumed_run_shows_the_same_keys_on_its_cached_task_runs(fake_llm, run_key, ledger):
    fake_llm.script("plan", plan_json(("a", []), ("b", [])))
    assert run_flow("again", run_key=run_key, builtin_tools=False)[0].is_completed()
    first = {r.name: r.cache_key for r in task_runs_of(run_key, ledger, settled=4)}
    state, _ = run_flow("again", run_key=run_key, builtin_tools=False)  # same key: every task replays
    assert state.is_completed()
    replayed = task_runs_of(run_key, ledger, settled=3)  # the ledger has the plan: no planning task
    assert {r.name: r.cache_key for r in replayed} == {k: v for k, v in first.items() if k != "plan"}
    assert {r.state.name for r in replayed} == {"Cached"}


def test_the_engine_still_backs_off_along_the_whole_list():
    """The page's number is display only: Prefect's engine reads the task's own list."""
    settings = PlanflowSettings(retry_backoff=1.0, max_retries=3)
    assert retry_options(settings)["retry_delay_seconds"] == [1.0, 2.0, 4.0]
