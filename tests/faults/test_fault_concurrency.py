"""Concurrency: many runs at once, and one run key started twice at once."""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest
from faultkit import CliResult, assert_cli_error, goal_of, plan_answer, route
from support.fake_openai import Reply

from planner.errors import RunInProgressError


def _counts(server) -> collections.Counter:
    return collections.Counter((goal_of(c.body), c.key) for c in server.calls)


def test_ten_different_runs_at_once_in_one_process_all_complete(fake_llm, run_key, ledger):
    """Ten flows in one event loop share the process (threads, the Prefect client, the
    ledger engine); each must see only its own results and pay for each node once."""
    from flows.plan_and_execute import plan_and_execute

    def answer(body: dict) -> Reply | str:
        goal, key = goal_of(body), route(body)
        if key == "plan":
            return plan_answer(("a", []), ("b", ["a"]))
        return f"{goal}/{key}"

    fake_llm.set_default(answer)
    goals = [f"concurrent goal {i}" for i in range(10)]

    async def all_at_once():
        runs = [plan_and_execute(goal=g, run_key=f"{run_key}-{i}", return_state=True) for i, g in enumerate(goals)]
        return await asyncio.wait_for(asyncio.gather(*runs), timeout=240)

    states = asyncio.run(all_at_once())

    for i, (goal, state) in enumerate(zip(goals, states)):
        result = state.result(raise_on_failure=False)
        assert state.is_completed(), (goal, result)
        assert result["answer"] == f"{goal}/node:b"
        run = ledger.run(f"{run_key}-{i}")
        assert (run.status, run.answer) == ("completed", f"{goal}/node:b")
        assert {n.node_id: n.result for n in ledger.nodes(f"{run_key}-{i}")} == {
            n: f"{goal}/node:{n}" for n in "ab"}
    counts = _counts(fake_llm)
    for goal in goals:
        for key in ("plan", "node:a", "node:b"):
            assert counts[(goal, key)] == 1, (goal, key, counts[(goal, key)])
    for call in fake_llm.calls:  # no cross-talk: a node sees its own run's results only
        if call.key == "node:b":
            goal = goal_of(call.body)
            prompt = call.body["messages"][-1]["content"]
            assert f"{goal}/node:a" in prompt
            assert all(f"{other}/" not in prompt for other in goals if other != goal)


SAME_KEY_PLAN = plan_answer(("a", []), ("b", ["a"]), ("c", ["b"]))


def _script_slow_run(fake_llm) -> None:
    fake_llm.script("plan", Reply(content=SAME_KEY_PLAN, delay=2.0))
    for node in "abc":
        fake_llm.script(f"node:{node}", Reply(content=f"result of {node}", delay=1.0))


def _assert_executed_once(fake_llm) -> None:
    counts = collections.Counter(c.key for c in fake_llm.calls)
    assert counts == {"plan": 1, "node:a": 1, "node:b": 1, "node:c": 1}, f"work paid twice: {dict(counts)}"


@pytest.mark.slow
def test_the_same_run_key_started_twice_at_once_executes_each_node_once(cli, fake_llm, run_key, ledger):
    """Two CLI processes, same --run-key, started together: one runs it; the other
    exits 1 naming the running flow run (or, if it came late, replays the finished run)."""
    _script_slow_run(fake_llm)
    args = ("Run me once", "--run-key", run_key, "--quiet")
    first = cli.start(*args)
    second = cli.start(*args)
    results = []
    for proc, out, err in (first, second):
        code = proc.wait(timeout=150)
        results.append(CliResult(code, out.read_text(), err.read_text(), 0.0))

    _assert_executed_once(fake_llm)
    winners = [r for r in results if r.returncode == 0]
    assert winners and all(r.stdout == "result of c\n" for r in winners), results
    for result in results:
        if result.returncode != 0:
            line = assert_cli_error(result, 1, run_key)
            assert "already running" in line or "another process" in line, line
    run = ledger.run(run_key)
    assert (run.status, run.answer) == ("completed", "result of c"), "the loser must not touch the ledger"
    assert {n.node_id: n.status for n in ledger.nodes(run_key)} == {"a": "completed", "b": "completed",
                                                                     "c": "completed"}


def test_the_same_run_key_twice_in_one_process_executes_each_node_once(fake_llm, run_key, ledger):
    from flows.plan_and_execute import plan_and_execute

    _script_slow_run(fake_llm)

    async def twice():
        first = asyncio.ensure_future(plan_and_execute(goal="Run me once", run_key=run_key, return_state=True))
        while not fake_llm.calls_for("plan"):  # the first run is planning: it holds the key
            await asyncio.sleep(0.02)
        second = asyncio.ensure_future(plan_and_execute(goal="Run me once", run_key=run_key, return_state=True))
        return await asyncio.wait_for(asyncio.gather(first, second), timeout=120)

    first, second = asyncio.run(twice())
    _assert_executed_once(fake_llm)
    assert first.is_completed(), first
    error = second.result(raise_on_failure=False)
    assert isinstance(error, RunInProgressError), repr(error)
    assert "already running" in str(error) and str(ledger.run(run_key).flow_run_id) in str(error)
    assert ledger.run(run_key).status == "completed"


def test_processes_opening_a_fresh_ledger_at_once_all_succeed(tmp_path):
    """Eight openers at once (threads stand in for processes: each has its own connection),
    five rounds on fresh files. Seen through the CLI too: concurrent first runs exit 3."""
    from planner.ledger import Ledger

    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'round{round_}' / 'planflow.db'}"
        barrier, errors = threading.Barrier(8), []

        def open_it() -> None:
            barrier.wait()
            try:
                Ledger(url).close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [], errors
