"""Replanning after permanent failures, against the fake OpenAI server and real Prefect."""

from __future__ import annotations

import json

from support.fake_openai import Reply
from support.flows import artifacts_by_key, plan_json, route, run_flow

from planner.errors import PlanError, ReplanRejectedError, RunFailedError


def decision(action: str, reason: str = "because", tasks: list[tuple[str, str, list[str]]] = ()) -> str:
    return json.dumps(
        {"action": action, "reason": reason,
         "tasks": [{"id": i, "description": d, "depends_on": deps} for i, d, deps in tasks]}
    )


def calls_per_node(server) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in server.calls:
        if call.key.startswith("node:"):
            counts[call.key[5:]] = counts.get(call.key[5:], 0) + 1
    return counts


class TestActions:
    def test_retry_modified_replaces_the_failed_node(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400, error_message="prompt too long"))
        fake_llm.script("replan", decision("retry_modified", "shorten it", [("b", "do b, briefly", ["a"])]))
        state, result = run_flow("retry modified", run_key=run_key)
        assert state.is_completed(), result
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "v2.1": 1, "c": 1}
        (replan_call,) = fake_llm.calls_for("replan")
        prompt = replan_call.body["messages"][-1]["content"]
        assert "Failed task b" in prompt and "prompt too long" in prompt and "result of node:a" in prompt
        (c_call,) = fake_llm.calls_for("node:c")
        assert "result of node:v2.1" in c_call.body["messages"][-1]["content"]
        versions = ledger.plan_versions(run_key)
        assert [(v.version, v.action, v.failed_node) for v in versions] == [(1, None, None), (2, "retry_modified", "b")]
        nodes = {n.node_id: n for n in ledger.nodes(run_key)}
        assert {k: n.status for k, n in nodes.items()} == {
            "a": "completed", "b": "failed", "c": "completed", "v2.1": "completed"}
        assert json.loads(nodes["c"].depends_on_json) == ["v2.1"]
        assert nodes["v2.1"].description == "do b, briefly"

    def test_skip_lets_dependents_proceed_without_it(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script("replan", decision("skip", "b is optional."))
        state, result = run_flow("skip it", run_key=run_key)
        assert state.is_completed(), result
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "c": 1}
        prompt = fake_llm.calls_for("node:c")[0].body["messages"][-1]["content"]
        assert '<result id="a"' in prompt, "c should inherit b's dependency on a"
        assert "Task b was skipped: b is optional." in prompt
        assert ledger.plan_versions(run_key)[-1].action == "skip"

    def test_full_replan_gets_namespaced_ids_and_keeps_completed_work(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", [])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script(
            "replan",
            decision("replan", "another way", [("n1", "fetch differently", ["a"]), ("n2", "finish", ["n1", "x"])]),
        )
        fake_llm.script("synthesis", "done")
        state, result = run_flow("full replan", run_key=run_key)
        assert state.is_completed(), result
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "x": 1, "v2.1": 1, "v2.2": 1}
        nodes = {n.node_id: n for n in ledger.nodes(run_key)}
        assert json.loads(nodes["v2.2"].depends_on_json) == ["v2.1", "x"]
        assert (nodes["c"].status, nodes["c"].error) == ("skipped", "replaced in plan v2")
        assert nodes["b"].status == "failed"


class TestBounds:
    def test_replan_limit_ends_the_run_with_the_history(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        # Every node but a fails for good, however it is rewritten.
        fake_llm.set_default(lambda body: "ok" if route(body) == "node:a" else Reply(status=400, error_message="nope"))
        fake_llm.script("replan", decision("retry_modified", "try again", [("b", "do b", ["a"])]))
        state, error = run_flow("hopeless", run_key=run_key, max_replans=2)
        assert isinstance(error, RunFailedError)
        message = str(error)
        assert error.node_id == "v3.1"
        assert "no replans left (2 of 2 used)" in message
        assert "v2 retry_modified after b" in message and "v3 retry_modified after v2.1" in message
        assert "came back unchanged" in message
        assert len(fake_llm.calls_for("replan")) == 2
        assert [v.version for v in ledger.plan_versions(run_key)] == [1, 2, 3]
        assert ledger.run(run_key).status == "failed"

    def test_no_replan_fails_at_once(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", [])))
        fake_llm.script("node:a", Reply(status=400))
        state, error = run_flow("no replan", run_key=run_key, replan_on_failure=False)
        assert isinstance(error, RunFailedError) and "replanning is off" in str(error)
        assert fake_llm.calls_for("replan") == []


class TestBadReplans:
    def test_cyclic_replan_is_asked_again_then_rejected(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script("replan", decision("replan", "loop", [("p", "P", ["q"]), ("q", "Q", ["p"])]))
        state, error = run_flow("cyclic replan", run_key=run_key)
        assert isinstance(error, ReplanRejectedError) and not isinstance(error, PlanError)
        assert "replan v2 rejected" in str(error) and "v2.1 -> v2.2 -> v2.1" in str(error)
        assert len(fake_llm.calls_for("replan")) == 2

    def test_reference_to_a_removed_node_is_rejected_then_corrected(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script(
            "replan",
            decision("replan", "uses c", [("n1", "N1", ["c"])]),
            decision("replan", "fixed", [("n1", "N1", ["a"])]),
        )
        state, result = run_flow("removed ref", run_key=run_key)
        assert state.is_completed(), result
        retry_prompt = fake_llm.calls_for("replan")[1].body["messages"][-1]["content"]
        assert "depends on 'c', which the replan removed" in retry_prompt

    def test_id_clash_with_a_completed_node_is_renamed(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script("replan", decision("replan", "clash", [("a", "redo a differently", [])]))
        state, result = run_flow("clash", run_key=run_key)
        assert state.is_completed(), result
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "v2.1": 1}
        repairs = json.loads(ledger.plan_versions(run_key)[-1].repairs_json)
        assert [r["kind"] for r in repairs] == ["renamed_id_clash"]


class TestResumeAcrossReplans:
    def test_rerun_continues_from_the_latest_version_without_new_plans(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400))
        fake_llm.script("replan", decision("retry_modified", "fix", [("b", "do b better", ["a"])]))
        fake_llm.script("node:v2.1", Reply(status=400), "v2.1 works now")
        state, _ = run_flow("resume replan", run_key=run_key, max_replans=1)
        assert state.is_failed()
        state, result = run_flow("resume replan", run_key=run_key, max_replans=1)
        assert state.is_completed(), result
        assert len(fake_llm.calls_for("plan")) == 1
        assert len(fake_llm.calls_for("replan")) == 1
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "v2.1": 2, "c": 1}
        assert result["plan_version"] == 2

    def test_a_node_waiting_for_its_replan_is_not_run_again(self, fake_llm, run_key, ledger):
        """A process killed while the replanner was asked about b leaves b marked in the ledger
        (emulated here after a run whose replan failed): the rerun asks the replanner again,
        and neither b nor its finished upstream is paid for twice."""
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400, error_message="b cannot be done"))
        fake_llm.script("replan", "not a decision", "still not one",
                        decision("retry_modified", "fix", [("b", "do b better", ["a"])]))
        state, error = run_flow("replan pending", run_key=run_key)
        assert state.is_failed() and isinstance(error, ReplanRejectedError), error
        assert not ledger.nodes(run_key)[1].replan_pending, "a replan that failed in a live process leaves no mark"
        ledger.node_replan_pending(run_key, "b")  # what a kill during the replan leaves behind
        state, result = run_flow("replan pending", run_key=run_key)
        assert state.is_completed(), result
        assert calls_per_node(fake_llm) == {"a": 1, "b": 1, "v2.1": 1, "c": 1}
        assert len(fake_llm.calls_for("replan")) == 3
        assert "b cannot be done" in fake_llm.calls_for("replan")[-1].body["messages"][-1]["content"]


class TestNotTheTasksFault:
    def test_a_database_failure_in_a_node_fails_the_run_without_a_replan(self, fake_llm, run_key, ledger):
        """Only a task's model call failing for good is worth a new plan; a broken ledger is not."""
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        trigger = f"planflow_test_fail_{run_key.replace('-', '_')}"
        with ledger.engine.begin() as conn:  # the database itself refuses b's start
            conn.execute(text(
                f"CREATE TRIGGER {trigger} BEFORE UPDATE ON nodes "
                f"WHEN NEW.run_key = '{run_key}' AND NEW.node_id = 'b' AND NEW.status = 'running' "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            ))
        try:
            state, error = run_flow("database failure", run_key=run_key)
        finally:
            with ledger.engine.begin() as conn:
                conn.execute(text(f"DROP TRIGGER {trigger}"))
        assert state.is_failed()
        assert isinstance(error, IntegrityError) and "disk on fire" in str(error), repr(error)
        assert fake_llm.calls_for("replan") == [], "a replan cannot fix the database"
        assert calls_per_node(fake_llm) == {"a": 1}
        run = ledger.run(run_key)
        assert run.status == "failed" and "disk on fire" in run.error
        assert {n.node_id: n.status for n in ledger.nodes(run_key)}["a"] == "completed"


def _task_runs_with_inputs(state) -> dict[str, dict]:
    """The flow run's task runs (a subflow appears as one in its parent), by id: name and upstream ids."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )

    return {
        str(r.id): {"name": r.name, "inputs": {str(i.id) for inputs in r.task_inputs.values() for i in inputs
                                                if hasattr(i, "id")}}
        for r in asyncio.run(read())
    }


class TestWhatTheUIShows:
    def test_a_replanned_run_shows_each_version_its_end_and_the_replan(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"])))
        fake_llm.script("node:b", Reply(status=400, error_message="prompt too long"))
        fake_llm.script("replan", decision("retry_modified", "shorten it", [("b", "do b, briefly", ["a"])]))
        state, result = run_flow("shown in the UI", run_key=run_key)
        assert state.is_completed(), result
        seen = artifacts_by_key(run_key, "plan-v1", "plan-v2", "replan-v2", "results")
        # Plan v1: made, then shown as it ended when v2 superseded it.
        made, ended = seen["plan-v1"]
        assert made.description == f"Plan v1 of {run_key}: initial plan"
        assert ended.description == f"Plan v1 of {run_key}: final state (superseded by v2)"
        assert "| `b` | do b | `a` | failed |" in ended.data and "| `a` | do a | — | completed |" in ended.data
        assert "| `c` | do c | `b` | skipped |" in ended.data and "**Legend:**" in ended.data
        # Plan v2 names the failed node, its error, the action and the diff; then its own end.
        made, ended = seen["plan-v2"]
        assert made.description == f"Plan v2 of {run_key}: retry_modified after b failed"
        assert ended.description == f"Plan v2 of {run_key}: final state (the run completed)"
        for text in (made.data, ended.data):
            assert "**Failed in v1:** `b`" in text and "prompt too long" in text
            assert "**Action:** `retry_modified`" in text and "| replaced | `b` → `v2.1` |" in text
            assert "| kept | `a` |" in text and "| kept, rewritten or rewired | `c` |" in text
        assert "| `v2.1` | do b, briefly | `a` | completed |" in ended.data
        # The replan subflow's own card: the failure, the decision, the new task.
        (card,) = seen["replan-v2"]
        assert "**Failed task:** `b`: do b" in card.data and "prompt too long" in card.data
        assert "**Decision:** `retry_modified`: shorten it" in card.data and "| `v2.1` | do b, briefly |" in card.data
        rows = seen["results"][-1].data
        rows = json.loads(rows) if isinstance(rows, str) else rows
        assert {r["node"]: r["status"] for r in rows} == {
            "a": "completed", "b": "failed", "v2.1": "completed", "c": "completed"}
        # The run graph reads as what happened: b -> the replan -> v2.1 (which also keeps its edge from a).
        graph = _task_runs_with_inputs(state)
        upstream = {name: {graph[i]["name"] for i in inputs if i in graph} for name, inputs in
                    ((r["name"], r["inputs"]) for r in graph.values())}
        (replan_run,) = [name for name in upstream if name.startswith("replan")]
        assert upstream[replan_run] == {"b: do b"}, upstream
        assert upstream["v2.1: do b, briefly"] == {"a: do a", replan_run}, upstream
        assert upstream["c: do c"] == {"v2.1: do b, briefly"}, upstream

