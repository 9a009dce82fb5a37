"""Rerun from a node (issue 13), in-process: the real flow with `rerun_from` /
`rerun_description`, real Prefect, the fake model server counting calls per node,
and a user tool that logs its side effects to a file of its own."""

from __future__ import annotations

import getpass
import json
import textwrap
from collections import Counter

from support.fake_openai import Reply, ToolCall
from support.flows import artifacts_by_key, echo_node, plan_json, run_flow

from planner.errors import UserInputError

DIAMOND = plan_json(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))


def model_calls(server, since: int = 0) -> Counter:
    """Model calls per route ('node:b', 'synthesis', ...) from the `since`-th call on."""
    return Counter(c.key for c in server.calls[since:])


def statuses(ledger, run_key: str) -> dict[str, str]:
    return {n.node_id: n.status for n in ledger.nodes(run_key)}


class TestRerunFromANode:
    def test_a_middle_node_of_a_diamond_and_its_descendant_run_once_each_the_rest_replays(
        self, fake_llm, run_key, ledger
    ):
        fake_llm.script("plan", DIAMOND)
        state, first = run_flow("a diamond", run_key=run_key)
        assert state.is_completed(), first
        before = len(fake_llm.calls)

        state, result = run_flow("a diamond", run_key=run_key, rerun_from="b")

        assert state.is_completed(), result
        assert model_calls(fake_llm, before) == {"node:b": 1, "node:d": 1}, "upstream and siblings must replay"
        assert result["plan_version"] == 2 and result["answer"] == "result of node:d"
        assert statuses(ledger, run_key) == {"a": "cached", "b": "completed", "c": "cached", "d": "completed"}
        assert {n.node_id: n.attempts for n in ledger.nodes(run_key)} == {"a": 1, "b": 1, "c": 1, "d": 1}
        version = ledger.plan_versions(run_key)[-1]
        assert (version.version, version.reason, version.action, version.requested_by) == (
            2, "rerun from b", "rerun", getpass.getuser(),
        )
        assert json.loads(version.rerun_json)["previous_results"] == {"b": "result of node:b", "d": "result of node:d"}
        assert ledger.run(run_key).status == "completed"

        # The plan cards show the new version and why it was made.
        seen = artifacts_by_key(run_key, "plan-v1", "plan-v2")
        assert seen["plan-v1"][-1].description == f"Plan v1 of {run_key}: final state (superseded by v2)"
        made = seen["plan-v2"][0]
        assert made.description.startswith(f"Plan v2 of {run_key}: rerun from b (asked by ")
        assert "**Rerun from `b`**" in made.data and "`b`, `d` run again" in made.data
        assert "| `b` | do b | `a` | pending |" in made.data and "| `a` | do a | — | completed |" in made.data

        # The same key resumed later (no rerun asked) replays the rerun's results: nothing runs again.
        before = len(fake_llm.calls)
        state, again = run_flow("a diamond", run_key=run_key)
        assert state.is_completed(), again
        assert model_calls(fake_llm, before) == {}
        assert again["plan_version"] == 2 and len(ledger.plan_versions(run_key)) == 2

    def test_the_answer_is_written_again_even_if_the_rerun_says_the_same(self, fake_llm, run_key):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["a"])))  # two sinks: b, c
        fake_llm.script("synthesis", "the answer")
        run_flow("two sinks", run_key=run_key)
        before = len(fake_llm.calls)
        state, result = run_flow("two sinks", run_key=run_key, rerun_from="b")
        assert state.is_completed(), result
        assert model_calls(fake_llm, before) == {"node:b": 1, "synthesis": 1}

    def test_a_new_description_is_what_the_model_sees(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", DIAMOND)
        run_flow("a diamond", run_key=run_key)
        before = len(fake_llm.calls)
        state, result = run_flow(
            "a diamond", run_key=run_key, rerun_from="b", rerun_description="do b, citing sources"
        )
        assert state.is_completed(), result
        assert model_calls(fake_llm, before) == {"node:b": 1, "node:d": 1}
        (b_call,) = [c for c in fake_llm.calls[before:] if c.key == "node:b"]
        prompt = b_call.body["messages"][-1]["content"]
        assert "do b, citing sources" in prompt and "do b\n" not in prompt
        assert {n.node_id: n.description for n in ledger.nodes(run_key)}["b"] == "do b, citing sources"
        (d_call,) = [c for c in fake_llm.calls[before:] if c.key == "node:d"]
        assert "do b, citing sources" in d_call.body["messages"][-1]["content"], "d sees b's new task text"

    def test_a_failed_run_reruns_and_completes(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", [])))
        fake_llm.script("node:b", Reply(status=400, error_message="bad prompt"), "b works now")
        state, _ = run_flow("fails at b", run_key=run_key, replan_on_failure=False)
        assert state.is_failed()
        assert statuses(ledger, run_key) == {"a": "completed", "b": "failed", "c": "skipped", "x": "completed"}
        before = len(fake_llm.calls)

        state, result = run_flow("fails at b", run_key=run_key, rerun_from="b")

        assert state.is_completed(), result
        assert model_calls(fake_llm, before) == {"node:b": 1, "node:c": 1, "synthesis": 1}
        assert statuses(ledger, run_key) == {"a": "cached", "b": "completed", "c": "completed", "x": "cached"}
        assert ledger.run(run_key).status == "completed"

    def test_an_unknown_node_fails_before_the_run_is_touched(self, fake_llm, run_key, ledger):
        fake_llm.script("plan", DIAMOND)
        run_flow("a diamond", run_key=run_key)
        before = len(fake_llm.calls)
        state, error = run_flow("a diamond", run_key=run_key, rerun_from="zz")
        assert state.is_failed()
        assert isinstance(error, UserInputError)
        assert "'zz'" in str(error) and "a, b, c, d" in str(error)
        assert model_calls(fake_llm, before) == {}
        assert ledger.run(run_key).status == "completed", "a bad request must leave the run as it was"
        assert len(ledger.plan_versions(run_key)) == 1

    def test_a_run_that_never_ran_cannot_be_rerun(self, fake_llm, run_key, ledger):
        state, error = run_flow("never ran", run_key=run_key, rerun_from="a")
        assert isinstance(error, UserInputError) and "no run" in str(error)
        assert ledger.run(run_key) is None and fake_llm.calls == []


SEND = '''
@tool
def send_notice(to: str) -> str:
    """Send a notice (a side effect: not safe to repeat)."""
    log(to=to)
    return f"sent to {to}"
'''


class TestRerunWithTools:
    def test_a_tool_call_of_a_rerun_node_happens_again_exactly_once(self, fake_llm, run_key, ledger, tmp_path):
        log = tmp_path / "effects.log"
        module = tmp_path / "rerun_tools.py"
        module.write_text(
            textwrap.dedent(
                f"""
                import json
                from planner.tools import tool

                def log(**fields):
                    with open({str(log)!r}, "a", encoding="utf-8") as f:
                        f.write(json.dumps(fields) + "\\n")
                """
            )
            + textwrap.dedent(SEND)
        )
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        fake_llm.script("node:b", Reply(tool_calls=[ToolCall("send_notice", {"to": "ops"}, id="call_1")]), "notified")
        state, result = run_flow("notify ops", run_key=run_key, tools=[str(module)])
        assert state.is_completed(), result
        assert len(log.read_text().splitlines()) == 1

        fake_llm.reset()  # the same script again, from its first turn
        fake_llm.set_default(echo_node)
        fake_llm.script("node:b", Reply(tool_calls=[ToolCall("send_notice", {"to": "ops"}, id="call_1")]), "notified")
        state, result = run_flow("notify ops", run_key=run_key, tools=[str(module)], rerun_from="b")

        assert state.is_completed(), result
        assert model_calls(fake_llm) == {"node:b": 2}, "b's two turns run again, a replays"
        assert log.read_text().splitlines() == ['{"to": "ops"}', '{"to": "ops"}'], "the notice is sent again, once"
        calls = ledger.tool_calls(run_key, "b")
        assert [(c.rerun_version, c.result, c.finished_at is not None) for c in calls] == [
            (0, "sent to ops", True), (2, "sent to ops", True),
        ]

        # Resumed later: the rerun's call is replayed, not made a third time.
        state, result = run_flow("notify ops", run_key=run_key, tools=[str(module)])
        assert state.is_completed(), result
        assert len(log.read_text().splitlines()) == 2
