"""The flow end to end, in-process, against the fake OpenAI server and real Prefect."""

from __future__ import annotations

import re

from support.flows import plan_json, run_flow
from support.fake_openai import Reply

from planner.errors import CycleError, RunFailedError


def _intervals(server, keys):
    return {c.key: (c.started, c.finished) for c in server.calls if c.key in keys}


def _max_concurrency(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


class TestExecution:
    def test_independent_nodes_run_concurrently(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", []), ("c", []), ("d", []), ("z", ["a", "b", "c", "d"])))
        for node in "abcd":
            fake_llm.script(f"node:{node}", Reply(content=f"result of {node}", delay=0.6))
        state, result = run_flow("wide", run_key=run_key, max_parallel=4)
        assert state.is_completed(), result
        spans = _intervals(fake_llm, {f"node:{n}" for n in "abcd"})
        latest_start = max(s for s, _ in spans.values())
        earliest_finish = min(f for _, f in spans.values())
        assert latest_start < earliest_finish, "the four independent nodes never overlapped"
        (z_start, _), = _intervals(fake_llm, {"node:z"}).values()
        assert z_start >= max(f for _, f in spans.values()), "z started before its dependencies finished"

    def test_max_parallel_bounds_concurrency(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(*[(f"n{i}", []) for i in range(6)]))
        fake_llm.set_default(lambda body: Reply(content="ok", delay=0.3))
        state, result = run_flow("bounded", run_key=run_key, max_parallel=2)
        assert state.is_completed(), result
        spans = _intervals(fake_llm, {f"node:n{i}" for i in range(6)})
        assert len(spans) == 6
        assert _max_concurrency(list(spans.values())) == 2

    def test_each_node_sees_exactly_its_dependencies(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["a", "c"])))
        state, result = run_flow("context", run_key=run_key)
        assert state.is_completed(), result
        seen = {}
        for call in fake_llm.calls:
            if call.key.startswith("node:"):
                prompt = call.body["messages"][-1]["content"]
                seen[call.key[5:]] = set(re.findall(r'<result id="([^"]+)"', prompt))
                for dep in seen[call.key[5:]]:
                    assert f"result of node:{dep}" in prompt
        assert seen == {"a": set(), "b": {"a"}, "c": {"b"}, "d": {"a", "c"}}
        # One sink: its result is the answer, no synthesis call.
        assert result["answer"] == "result of node:d"
        assert "synthesis" not in {c.key for c in fake_llm.calls}

    def test_several_sinks_are_synthesised(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", [])))
        fake_llm.script("synthesis", "the final answer")
        state, result = run_flow("two sinks", run_key=run_key)
        assert result["answer"] == "the final answer"
        (synthesis,) = fake_llm.calls_for("synthesis")
        prompt = synthesis.body["messages"][-1]["content"]
        assert "result of node:a" in prompt and "result of node:b" in prompt
        assert ledger.run(run_key).answer == "the final answer"

    def test_plan_is_requested_with_strict_json_schema(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", [])))
        run_flow("schema", run_key=run_key)
        (call,) = fake_llm.calls_for("plan")
        fmt = call.body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        task_schema = fmt["json_schema"]["schema"]["properties"]["tasks"]["items"]
        # The run offers the built-in tools, so a task may name the ones it needs.
        assert task_schema["required"] == ["id", "description", "depends_on", "tools"]
        assert "calculator" in call.body["messages"][-1]["content"] + call.body["messages"][0]["content"]


class TestRetries:
    def test_transient_errors_are_retried_then_succeed(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        fake_llm.script(
            "node:b",
            Reply(status=500),
            Reply(status=429, headers={"Retry-After": "0.2"}),
            Reply(reset=True),
            "b finally",
        )
        state, result = run_flow("flaky", run_key=run_key, max_retries=3)
        assert state.is_completed(), result
        assert result["answer"] == "b finally"
        assert len(fake_llm.calls_for("node:b")) == 4
        node_b = {n.node_id: n for n in ledger.nodes(run_key)}["b"]
        assert (node_b.status, node_b.attempts) == ("completed", 4)
        calls = fake_llm.calls_for("node:b")
        assert calls[2].started - calls[1].finished >= 0.2, "Retry-After was not honoured"

    def test_bad_request_is_not_retried_and_fails_the_run(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", [])))
        fake_llm.script("node:b", Reply(status=400, error_message="unsupported parameter"))
        state, error = run_flow("doomed", run_key=run_key, max_retries=3, replan_on_failure=False)
        assert state.is_failed()
        assert isinstance(error, RunFailedError) and error.node_id == "b"
        assert "HTTP 400" in str(error) and "unsupported parameter" in str(error)
        assert len(fake_llm.calls_for("node:b")) == 1
        nodes = {n.node_id: n for n in ledger.nodes(run_key)}
        assert {k: v.status for k, v in nodes.items()} == {
            "a": "completed", "b": "failed", "c": "skipped", "x": "completed",
        }
        assert nodes["a"].result == "result of node:a", "completed work must be kept"
        assert ledger.run(run_key).status == "failed"

    def test_retries_exhausted_fail_the_node(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", [])))
        fake_llm.script("node:a", Reply(status=503))
        state, error = run_flow("always down", run_key=run_key, max_retries=2, replan_on_failure=False)
        assert isinstance(error, RunFailedError)
        assert len(fake_llm.calls_for("node:a")) == 3
        assert {n.node_id: n.attempts for n in ledger.nodes(run_key)} == {"a": 3}


class TestPlanning:
    def test_repairs_are_recorded(self, fake_llm, run_key, ledger):
        fake_llm.script(
            "plan",
            'Here you go:\n```json\n{"tasks": [{"id": 1, "description": "first", "depends_on": [1]},'
            ' {"id": 2, "description": "second", "depends_on": ["1", "9"]}]}\n```',
        )
        state, result = run_flow("repairable", run_key=run_key)
        assert state.is_completed(), result
        (version,) = ledger.plan_versions(run_key)
        kinds = [r["kind"] for r in __import__("json").loads(version.repairs_json)]
        assert kinds == ["dropped_self_loop", "dropped_unknown_dependency"]

    def test_unrepairable_plan_is_asked_again_once_then_fails(self, fake_llm, run_key):
        cyclic = plan_json(("a", ["b"]), ("b", ["a"]))
        fake_llm.script("plan", cyclic)
        state, error = run_flow("cyclic", run_key=run_key)
        assert isinstance(error, CycleError)
        assert "a -> b -> a" in str(error)
        calls = fake_llm.calls_for("plan")
        assert len(calls) == 2
        assert "rejected: the plan has a dependency cycle" in calls[1].body["messages"][-1]["content"]

    def test_second_answer_is_used_when_the_first_is_unrepairable(self, fake_llm, run_key):
        fake_llm.script("plan", "I cannot do JSON", plan_json(("a", [])))
        state, result = run_flow("second chance", run_key=run_key)
        assert state.is_completed(), result
        assert len(fake_llm.calls_for("plan")) == 2


class TestResume:
    def test_rerun_with_same_key_replays_everything(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", [])))
        fake_llm.script("synthesis", "answer one")
        first_state, first = run_flow("replay", run_key=run_key)
        calls_before = len(fake_llm.calls)
        second_state, second = run_flow("replay", run_key=run_key)
        assert second_state.is_completed()
        assert second == first
        assert len(fake_llm.calls) == calls_before, "a finished run re-paid for work"
        assert {n.status for n in ledger.nodes(run_key)} == {"cached"}
        assert {n.attempts for n in ledger.nodes(run_key)} == {1}

    def test_failed_run_resumes_without_redoing_finished_nodes(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400), "b works now")
        state, _ = run_flow("resume after fix", run_key=run_key, replan_on_failure=False)
        assert state.is_failed()
        state, result = run_flow("resume after fix", run_key=run_key)
        assert state.is_completed(), result
        assert [len(fake_llm.calls_for(f"node:{n}")) for n in "abc"] == [1, 2, 1]
        assert {n.node_id: n.status for n in ledger.nodes(run_key)} == {
            "a": "cached", "b": "completed", "c": "completed",
        }

    def test_a_changed_description_reruns_that_node_and_its_dependents(self, fake_llm, run_key):
        import json

        plan = {"tasks": [{"id": "a", "description": "one", "depends_on": []},
                          {"id": "b", "description": "two", "depends_on": ["a"]},
                          {"id": "c", "description": "three", "depends_on": []}]}
        run_flow("edited plan", run_key=run_key, plan=plan)
        fake_llm.set_default(lambda body: "a different result")
        plan["tasks"][0]["description"] = "one, edited"
        state, result = run_flow("edited plan", run_key=run_key, plan=json.loads(json.dumps(plan)))
        assert state.is_completed(), result
        assert [len(fake_llm.calls_for(f"node:{n}")) for n in "abc"] == [2, 2, 1]


class TestFreshRuns:
    def test_fresh_gives_each_flow_run_its_own_key(self, fake_llm):
        fake_llm.script("plan", plan_json(("a", [])))
        _, first = run_flow("a daily goal", fresh=True)
        _, second = run_flow("a daily goal", fresh=True)
        assert first["run_key"] != second["run_key"]
        assert first["run_key"].startswith("a-daily-goal-")
        assert len(fake_llm.calls_for("plan")) == 2, "a fresh run must not replay the last one"


class TestNaming:
    def test_braces_in_a_description_are_text_not_a_template(self, fake_llm, run_key):
        fake_llm.script("plan", '{"tasks": [{"id": "a", "description": "open {recep} and look", "depends_on": []}]}')
        state, result = run_flow("braces", run_key=run_key)
        assert state.is_completed(), result
        assert result["answer"] == "result of node:a"

    def test_task_runs_are_named_tagged_and_carry_the_plan_edges(self, fake_llm, run_key, monkeypatch):
        """The UI draws the DAG from each task run's inputs: every dependency must be there."""
        monkeypatch.setenv("PLANFLOW_TASK_TAGS", "true")
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])))
        state, result = run_flow("edges", run_key=run_key)
        assert state.is_completed(), result

        runs = _node_task_runs(state, "abcd")
        assert {n: r.name for n, r in runs.items()} == {n: f"{n}: do {n}" for n in "abcd"}
        assert all(set(r.tags) == {f"run:{run_key}", "plan:v1"} for r in runs.values())
        by_id = {r.id: n for n, r in runs.items()}
        upstream = {
            n: {by_id[i.id] for inputs in r.task_inputs.values() for i in inputs if getattr(i, "id", None) in by_id}
            for n, r in runs.items()
        }
        assert upstream == {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b", "c"}}

    def test_task_runs_are_untagged_by_default(self, fake_llm, run_key, monkeypatch):
        """Tags cost an API round trip per task run (Prefect's tag concurrency slots): opt-in."""
        monkeypatch.delenv("PLANFLOW_TASK_TAGS", raising=False)
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        state, result = run_flow("untagged", run_key=run_key)
        assert state.is_completed(), result
        runs = _node_task_runs(state, "ab")
        assert set(runs) == {"a", "b"} and all(r.tags == [] for r in runs.values())


def _node_task_runs(state, node_ids):
    """The flow run's task runs of the given nodes, by node id, read back from Prefect."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )

    return {r.name.split(":", 1)[0]: r for r in asyncio.run(read()) if r.name.split(":", 1)[0] in node_ids}


class TestLongLivedProcess:
    def test_runs_do_not_leak_file_descriptors(self, fake_llm, monkeypatch):
        """A process that runs flow after flow (the Python API, a test suite) keeps no
        connections of finished runs. (Tags off: Prefect itself keeps a client per tag set.)"""
        import os
        import uuid

        monkeypatch.setenv("PLANFLOW_TASK_TAGS", "false")
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))

        def open_fds() -> int:
            return len(os.listdir("/proc/self/fd"))

        run_flow("leak check", run_key=f"leak-{uuid.uuid4().hex[:8]}")  # warm: Prefect's own clients
        before = open_fds()
        for _ in range(4):
            state, result = run_flow("leak check", run_key=f"leak-{uuid.uuid4().hex[:8]}")
            assert state.is_completed(), result
        assert open_fds() - before <= 2, f"{open_fds() - before} more open files after 4 runs"
