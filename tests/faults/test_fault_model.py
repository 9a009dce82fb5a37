"""A hostile model: bad plans, huge answers, hangs, resets and rate limits.

Every case runs the real flow in-process against the real fake-OpenAI HTTP server
and real Prefect, and ends in a completed run or a clear, typed error, with the
ledger consistent and every completed node's result kept.
"""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from faultkit import MidBodyResetProxy, decision, node_calls, plan_answer, prompt_of, route
from support.fake_openai import Reply
from support.flows import run_flow

from planner.errors import (
    EmptyPlanError,
    PlanParseError,
    PlanTooLargeError,
    RunFailedError,
)


def _nodes(ledger, run_key):
    return {n.node_id: n for n in ledger.nodes(run_key)}


def ledger_calls(ledger, run_key):
    from sqlmodel import Session, select

    from planner.ledger import LLMCallRecord

    with Session(ledger.engine) as s:
        return list(s.exec(select(LLMCallRecord).where(LLMCallRecord.run_key == run_key)))


def _repairs(ledger, run_key, version=1):
    (record,) = [v for v in ledger.plan_versions(run_key) if v.version == version]
    return [(r["kind"], r["task_id"]) for r in json.loads(record.repairs_json)]


TWO = plan_answer(("a", []), ("b", ["a"]))
FIVE_HUNDRED = json.dumps({"tasks": [{"id": f"t{i}", "description": f"step {i}", "depends_on": []}
                                     for i in range(1, 501)]})


class TestBadPlans:
    """The planner's answer is broken. Repairable defects are repaired (and logged);
    unrepairable ones are shown to the model once, naming the defect; a second bad
    answer fails the run with a typed PlanError."""

    # case: (first answer, second answer or None, nodes expected to run, repairs expected,
    #        words the re-ask must contain)
    CASES = {
        "malformed_json": ('{"tasks": [{"id": "a", "description": "do a", "depends_on": [}', TWO,
                           {"a", "b"}, [], ["rejected", "no JSON plan found"]),
        "array_not_object": (json.dumps([{"id": "a", "description": "do a", "depends_on": []},
                                         {"id": "b", "description": "do b", "depends_on": ["a"]}]),
                             None, {"a", "b"}, [("unwrapped_task_list", None)], []),
        "empty_plan": ('{"tasks": []}', TWO, {"a", "b"}, [], ["rejected", "the plan has no tasks"]),
        "five_hundred_tasks": (FIVE_HUNDRED, TWO, {"a", "b"}, [],
                               ["rejected", "500 tasks", "limit of 12"]),
        "ids_int_float_null": (
            json.dumps({"tasks": [
                {"id": 1, "description": "one", "depends_on": []},
                {"id": 2.0, "description": "two", "depends_on": [1]},
                {"id": None, "description": "three", "depends_on": [2.0]},
                {"id": 2.5, "description": "four", "depends_on": ["1"]},
            ]}),
            None, {"1", "2", "t3", "2.5"}, [("generated_id", "t3")], []),
        "depends_on_string": (
            json.dumps({"tasks": [
                {"id": "a", "description": "do a", "depends_on": []},
                {"id": "b", "description": "do b", "depends_on": []},
                {"id": "c", "description": "do c", "depends_on": "a, b"},
            ]}),
            None, {"a", "b", "c"}, [("coerced_depends_on", "c")], []),
    }

    @pytest.mark.parametrize("case", list(CASES))
    def test_bad_plan_is_repaired_or_reasked_once(self, case, fake_llm, run_key, ledger):
        first, second, nodes, repairs, reask_words = self.CASES[case]
        fake_llm.script("plan", first, *([second] if second else []))
        fake_llm.script("synthesis", "the synthesis")
        state, result = run_flow(f"bad plan {case}", run_key=run_key)

        assert state.is_completed(), result
        plan_calls = fake_llm.calls_for("plan")
        assert len(plan_calls) == (2 if second else 1)
        if second:
            reask = prompt_of(plan_calls[1])
            for word in reask_words:
                assert word in reask, (word, reask[:500])
        assert node_calls(fake_llm) == {n: 1 for n in nodes}
        recorded = _nodes(ledger, run_key)
        assert set(recorded) == nodes
        assert all(n.status == "completed" and n.result == f"result of node:{i}" for i, n in recorded.items())
        assert _repairs(ledger, run_key) == repairs
        run = ledger.run(run_key)
        assert (run.status, run.answer) == ("completed", result["answer"])
        if case == "depends_on_string":  # "a, b" became two real edges: c sees both results
            (c_call,) = fake_llm.calls_for("node:c")
            assert "result of node:a" in prompt_of(c_call) and "result of node:b" in prompt_of(c_call)

    @pytest.mark.parametrize(
        "answer,error_type,words",
        [
            ("I'd rather not plan today.", PlanParseError, ["no JSON plan found"]),
            ('{"tasks": []}', EmptyPlanError, ["no tasks"]),
            (FIVE_HUNDRED, PlanTooLargeError, ["500 tasks", "limit of 12"]),
        ],
        ids=["prose", "empty", "500_tasks"],
    )
    def test_second_bad_answer_fails_the_run_with_a_typed_error(
        self, answer, error_type, words, fake_llm, run_key, ledger
    ):
        fake_llm.script("plan", answer)
        state, error = run_flow(f"always bad {error_type.__name__}", run_key=run_key)

        assert state.is_failed()
        assert isinstance(error, error_type), repr(error)
        for word in words:
            assert word in str(error)
        assert len(fake_llm.calls_for("plan")) == 2, "re-asked exactly once"
        assert node_calls(fake_llm) == {}
        run = ledger.run(run_key)
        assert (run.status, run.error) == ("failed", str(error))
        assert ledger.plan_versions(run_key) == [] and ledger.nodes(run_key) == []


class TestHugeOutputs:
    RESULT_CHARS, CONTEXT_CHARS = 5000, 1000
    HUGE = 2_000_000

    def test_a_2mb_answer_is_capped_in_storage_and_in_context_and_says_so(
        self, fake_llm, run_key, ledger, monkeypatch
    ):
        monkeypatch.setenv("PLANFLOW_RESULT_CHARS", str(self.RESULT_CHARS))
        monkeypatch.setenv("PLANFLOW_CONTEXT_CHARS", str(self.CONTEXT_CHARS))
        fake_llm.script("plan", TWO)
        fake_llm.script("node:a", "A" * self.HUGE)
        state, result = run_flow("huge output", run_key=run_key)
        assert state.is_completed(), result

        stored = _nodes(ledger, run_key)["a"].result
        assert stored.startswith("A" * self.RESULT_CHARS)
        assert len(stored) < self.RESULT_CHARS + 100, len(stored)
        assert stored.endswith(f"[... {self.HUGE - self.RESULT_CHARS} more characters cut]"), stored[-80:]

        (b_call,) = fake_llm.calls_for("node:b")
        prompt = prompt_of(b_call)
        block = prompt.split('<result id="a"', 1)[1].split("</result>", 1)[0]
        assert block.count("A") == self.CONTEXT_CHARS, "exactly the context cap of the result is passed on"
        assert "more characters cut]" in block, "the context must say it was cut"
        assert len(json.dumps(b_call.body)) < self.CONTEXT_CHARS + 4000, "the request carried more than the cap"

    def test_a_2mb_synthesis_is_capped_in_storage_and_says_so(self, fake_llm, run_key, ledger, monkeypatch):
        monkeypatch.setenv("PLANFLOW_RESULT_CHARS", str(self.RESULT_CHARS))
        fake_llm.script("plan", plan_answer(("a", []), ("b", [])))
        fake_llm.script("synthesis", "S" * self.HUGE)
        state, result = run_flow("huge synthesis", run_key=run_key)
        assert state.is_completed(), result
        answer = ledger.run(run_key).answer
        assert len(answer) < self.RESULT_CHARS + 100, len(answer)
        assert "more characters cut" in answer


class TestTransport:
    def test_a_hanging_response_times_out_is_retried_then_replanned(
        self, fake_llm, run_key, ledger, monkeypatch
    ):
        """a hangs once then answers (retried as transient); b hangs every time: after its
        retries it fails for good and the replanner skips it; the run completes."""
        monkeypatch.setenv("PLANFLOW_REQUEST_TIMEOUT", "1")
        fake_llm.script("plan", plan_answer(("a", []), ("b", []), ("c", ["a", "b"])))
        fake_llm.script("node:a", Reply(hang=True), "a after a hang")
        fake_llm.script("node:b", Reply(hang=True))
        fake_llm.script("replan", decision("skip", "b never answers."))
        state, result = run_flow("hangs", run_key=run_key, max_retries=1)

        assert state.is_completed(), result
        assert result["answer"] == "result of node:c"
        assert node_calls(fake_llm) == {"a": 2, "b": 2, "c": 1}
        for call in fake_llm.calls_for("node:a")[:1] + fake_llm.calls_for("node:b"):
            held = call.finished - call.started
            assert 0.8 <= held < 5, f"a hung call was held {held:.1f}s with a 1 s timeout"
        (replan_call,) = fake_llm.calls_for("replan")
        assert "timed out" in prompt_of(replan_call)
        nodes = _nodes(ledger, run_key)
        assert (nodes["a"].status, nodes["a"].result, nodes["a"].attempts) == ("completed", "a after a hang", 2)
        assert nodes["b"].status == "failed" and "timed out" in nodes["b"].error
        assert nodes["c"].status == "completed"

    def test_a_hanging_model_without_replans_fails_clearly(self, fake_llm, run_key, ledger, monkeypatch):
        monkeypatch.setenv("PLANFLOW_REQUEST_TIMEOUT", "1")
        fake_llm.script("plan", plan_answer(("a", []), ("b", [])))
        fake_llm.script("node:b", Reply(hang=True))
        state, error = run_flow("hangs for good", run_key=run_key, max_retries=1, replan_on_failure=False)

        assert isinstance(error, RunFailedError) and error.node_id == "b"
        assert "timed out" in str(error) and "'b'" in str(error)
        nodes = _nodes(ledger, run_key)
        assert (nodes["a"].status, nodes["a"].result) == ("completed", "result of node:a"), "kept"
        assert ledger.run(run_key).status == "failed"

    def test_rate_limits_and_resets_are_retried_and_retry_after_is_capped(
        self, fake_llm, run_key, ledger, monkeypatch
    ):
        """Six independent nodes, each hit by one fault, then answered. Gaps between a
        node's two calls are measured on the server's clock."""
        cap = 3.0
        monkeypatch.setenv("PLANFLOW_RETRY_AFTER_CAP", str(cap))
        past = email.utils.formatdate(time.time() - 3600, usegmt=True)
        far_date = email.utils.formatdate(time.time() + 10 * 365 * 86400, usegmt=True)
        faults = {
            "no_header": Reply(status=429, error_message="slow down"),
            "one_second": Reply(status=429, headers={"Retry-After": "1"}),
            "past_date": Reply(status=429, headers={"Retry-After": past}),
            "a_day": Reply(status=429, headers={"Retry-After": "86400"}),
            "far_date": Reply(status=429, headers={"Retry-After": far_date}),
            "reset": Reply(reset=True),
        }
        fake_llm.script("plan", plan_answer(*[(n, []) for n in faults], ("z", list(faults))))
        for node, fault in faults.items():
            fake_llm.script(f"node:{node}", fault, f"{node} ok")
        state, result = run_flow("rate limited", run_key=run_key, max_retries=2, max_parallel=6)

        assert state.is_completed(), result
        assert node_calls(fake_llm) == {**{n: 2 for n in faults}, "z": 1}
        gap = {}
        for node in faults:
            first, second = fake_llm.calls_for(f"node:{node}")
            gap[node] = second.started - first.finished
        assert gap["one_second"] >= 1.0, gap
        assert cap <= gap["a_day"] < cap + 8, f"Retry-After: 86400 not capped at {cap}s: {gap}"
        assert cap <= gap["far_date"] < cap + 8, f"a far Retry-After date not capped at {cap}s: {gap}"
        assert gap["past_date"] < cap and gap["no_header"] < cap, f"waited without reason: {gap}"
        nodes = _nodes(ledger, run_key)
        assert all(nodes[n].attempts == 2 and nodes[n].result == f"{n} ok" for n in faults)
        totals = ledger.llm_totals(run_key)
        assert totals["calls"] == len(fake_llm.calls), "every call, failed or not, is in the ledger"

    def test_a_connection_reset_mid_response_is_retried(self, fake_llm, run_key, ledger, monkeypatch):
        """The headers and half of b's answer arrive, then the connection is reset."""
        proxy = MidBodyResetProxy(fake_llm.base_url, lambda body: route(body) == "node:b")
        monkeypatch.setenv("OPENAI_BASE_URL", proxy.base_url)
        try:
            fake_llm.script("plan", plan_answer(("a", []), ("b", ["a"])))
            fake_llm.script("node:b", "b " * 2000)
            state, result = run_flow("reset mid-response", run_key=run_key, max_retries=2)
        finally:
            proxy.close()

        assert proxy.cut_count == 1
        assert state.is_completed(), result
        assert result["answer"] == "b " * 2000
        assert node_calls(fake_llm) == {"a": 1, "b": 2}
        node_b = _nodes(ledger, run_key)["b"]
        assert (node_b.status, node_b.attempts) == ("completed", 2)
        errors = [c.error for c in ledger_calls(ledger, run_key) if c.error]
        assert len(errors) == 1 and ("could not reach" in errors[0] or "transport" in errors[0]
                                     or "unreadable" in errors[0]), errors
