"""The node's ReAct loop on its own: plain coroutines stand in for the durable steps."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from planner.errors import RepeatedToolCallError, StepBudgetError, TaskFailedError
from planner.llm import Completion, ToolCallRequest
from planner.react import Observation, canonical_arguments, describe_call, parse_arguments, run_tool_loop


def answer(text: str) -> Completion:
    return Completion(text=text, prompt_tokens=10, completion_tokens=2, finish_reason="stop")


def calls(*pairs: tuple[str, dict]) -> Completion:
    requests = tuple(ToolCallRequest(f"call_{i}", name, json.dumps(args)) for i, (name, args) in enumerate(pairs))
    return Completion(text="", prompt_tokens=10, completion_tokens=5, finish_reason="tool_calls", tool_calls=requests)


class Scripted:
    """Turns from a script; calls answered by `tools` (name -> function of the arguments)."""

    def __init__(self, turns: list[Completion], tools: dict, delay: float = 0.0) -> None:
        self.turns, self.tools, self.delay = list(turns), tools, delay
        self.seen: list[list[dict]] = []
        self.spans: list[tuple[float, float]] = []

    async def turn(self, step: int, messages: list[dict]) -> Completion:
        self.seen.append([dict(m) for m in messages])
        return self.turns[step - 1]

    async def call(self, step: int, index: int, request: ToolCallRequest) -> Observation:
        start = time.monotonic()
        await asyncio.sleep(self.delay)
        self.spans.append((start, time.monotonic()))
        try:
            result = self.tools[request.name](**json.loads(request.arguments))
        except Exception as exc:
            return Observation(request.name, request.arguments, error=str(exc))
        return Observation(request.name, request.arguments, result=str(result))


def run(runner: Scripted, max_steps: int = 8):
    return asyncio.run(run_tool_loop([{"role": "user", "content": "task"}], runner, node_id="t1", max_steps=max_steps))


class TestLoop:
    def test_two_tools_over_three_steps_then_an_answer(self):
        runner = Scripted(
            [calls(("add", {"a": 1, "b": 2})), calls(("double", {"x": 3})), answer("six")],
            {"add": lambda a, b: a + b, "double": lambda x: 2 * x},
        )
        outcome = run(runner)
        assert (outcome.text, outcome.steps, outcome.tool_calls) == ("six", 3, 2)
        assert outcome.prompt_tokens == 30 and outcome.completion_tokens == 12
        last = runner.seen[-1]
        assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]
        assert [m["content"] for m in last if m["role"] == "tool"] == ["3", "6"]
        assert last[2]["tool_call_id"] == "call_0"

    def test_calls_of_one_turn_run_together(self):
        runner = Scripted([calls(("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2})), answer("ok")],
                          {"add": lambda a, b: a + b}, delay=0.3)
        run(runner)
        (s1, e1), (s2, e2) = runner.spans
        assert s2 < e1 and s1 < e2, "the two calls did not overlap"

    def test_an_error_is_the_observation_and_the_model_may_correct_itself(self):
        def add(a, b):
            if not isinstance(a, int):
                raise ValueError("a must be an integer")
            return a + b

        runner = Scripted([calls(("add", {"a": "x", "b": 1})), calls(("add", {"a": 1, "b": 1})), answer("2")], {"add": add})
        assert run(runner).text == "2"
        assert runner.seen[1][-1]["content"] == "error: a must be an integer"

    def test_a_failed_call_may_be_repeated(self):
        attempts = []

        def flaky(x):
            attempts.append(x)
            if len(attempts) == 1:
                raise RuntimeError("busy")
            return "done"

        runner = Scripted([calls(("flaky", {"x": 1})), calls(("flaky", {"x": 1})), answer("ok")], {"flaky": flaky})
        assert run(runner).text == "ok" and len(attempts) == 2


class TestBounds:
    def test_the_step_budget_fails_the_node_and_says_so(self):
        runner = Scripted([calls(("add", {"a": i, "b": 0})) for i in range(5)], {"add": lambda a, b: a + b})
        with pytest.raises(StepBudgetError, match=r"task t1 used all 3 steps without answering .*add\(a=2, b=0\).*--max-steps"):
            run(runner, max_steps=3)
        assert len(runner.spans) == 2, "the last turn's calls ran with no turn left to read them"

    def test_a_repeated_answered_call_is_stopped(self):
        runner = Scripted([calls(("add", {"a": 1, "b": 2})), calls(("add", {"b": 2, "a": 1})), answer("x")],
                          {"add": lambda a, b: a + b})
        with pytest.raises(RepeatedToolCallError, match=r"repeated add\(b=2, a=1\) at step 2, already answered at step 1"):
            run(runner)
        assert len(runner.spans) == 1

    def test_budget_and_repeat_errors_feed_the_replanner(self):
        assert issubclass(StepBudgetError, TaskFailedError) and issubclass(RepeatedToolCallError, TaskFailedError)

    def test_a_call_that_cannot_run_is_raised_after_its_siblings_finish(self):
        finished = []

        class Runner(Scripted):
            async def call(self, step, index, request):
                if index == 0:
                    raise TaskFailedError("outcome unknown")
                await asyncio.sleep(0.1)
                finished.append(index)
                return Observation(request.name, request.arguments, result="ok")

        runner = Runner([calls(("a", {}), ("b", {})), answer("x")], {})
        with pytest.raises(TaskFailedError, match="outcome unknown"):
            run(runner)
        assert finished == [1]


class TestArguments:
    def test_parse(self):
        assert parse_arguments('{"a": 1}') == {"a": 1}
        assert parse_arguments("") == {}
        with pytest.raises(ValueError, match="not valid JSON"):
            parse_arguments("{a: 1")
        with pytest.raises(ValueError, match="JSON object, not list"):
            parse_arguments("[1]")

    def test_canonical_form_ignores_order_and_spacing(self):
        assert canonical_arguments('{"b": 2, "a": 1}') == canonical_arguments('{"a":1,"b":2}')
        assert canonical_arguments("not json ") == "not json"

    def test_describe_is_short(self):
        assert describe_call("send_notice", '{"team": "ops"}') == "send_notice(team='ops')"
        long = describe_call("write_file", json.dumps({"path": "a.txt", "content": "x" * 500}), limit=40)
        assert len(long) <= 40 and long.endswith("…)")
