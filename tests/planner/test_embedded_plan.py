"""The embedded model's relative plan form: schema, examples and conversion, without a model."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from planner.compiler import compile_plan
from planner.embedded_plan import AFTER, plan_from_relative, relative_example, relative_plan_schema
from planner.plan_examples import PLAN_EXAMPLES, example_pool, nearest_examples
from planner.prompts import EMBEDDED_PLANNER_SYSTEM, PLANNER_SYSTEM, planning_messages, planning_retry_messages


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def rel(*afters: str | None) -> dict[str, Any]:
    tasks: list[dict[str, str]] = []
    for i, word in enumerate(afters, 1):
        tasks.append({"description": f"step {i}"} | ({"after": word} if word else {}))
    return {"tasks": tasks}


def deps(text: str) -> list[list[str]]:
    return [t["depends_on"] for t in json.loads(text)["tasks"]]


class TestSchema:
    @pytest.mark.parametrize("n", range(1, 8))
    def test_every_length_up_to_max_is_admitted(self, n: int) -> None:
        assert valid(relative_plan_schema(7), rel(None, *["previous"] * (n - 1)))

    def test_more_than_max_none_and_unknown_words_are_refused(self) -> None:
        schema = relative_plan_schema(3)
        assert not valid(schema, rel(None, "start", "start", "start"))
        assert not valid(schema, {"tasks": []})
        assert not valid(schema, rel(None, "t1"))
        assert not valid(schema, rel(None, "all"))  # task 2: "all" would only repeat "previous"
        assert valid(schema, rel(None, "start", "all"))

    def test_descriptions_cannot_hold_markup(self) -> None:
        schema = relative_plan_schema(2)
        assert not valid(schema, {"tasks": [{"description": "<h2>Party</h2>"}]})
        assert not valid(schema, {"tasks": [{"description": "{your_custom code here}"}]})
        assert not valid(schema, {"tasks": [{"description": ""}]})
        assert not valid(schema, {"tasks": [{"description": "a\nb"}]})  # no raw control characters
        assert valid(schema, {"tasks": [{"description": "Book a table for 4 (7 pm), then confirm."}]})

    def test_first_task_has_no_after_and_after_comes_after_the_description(self) -> None:
        defs = relative_plan_schema(3)["$defs"]
        assert defs["t1"]["required"] == ["description"]
        assert defs["t3"]["required"] == ["description", "after"]
        assert defs["t3"]["properties"]["after"]["enum"] == list(AFTER)

    def test_max_tasks_below_one_is_a_mistake(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            relative_plan_schema(0)


class TestConversion:
    def test_words_become_dependencies(self) -> None:
        text = plan_from_relative(json.dumps(rel(None, "start", "all", "previous")))
        assert deps(text) == [[], [], ["t1", "t2"], ["t3"]]
        assert [t["id"] for t in json.loads(text)["tasks"]] == ["t1", "t2", "t3", "t4"]
        compiled = compile_plan(text, strict=True)
        assert compiled.repairs == ()

    def test_a_raw_newline_in_a_description_is_read(self) -> None:
        text = plan_from_relative('{"tasks": [{"description": "a\nb"}, {"description": "c", "after": "previous"}]}')
        assert deps(text) == [[], ["t1"]]
        assert compile_plan(text).plan.tasks[0].description.split() == ["a", "b"]

    def test_a_missing_word_means_start(self) -> None:
        assert deps(plan_from_relative(json.dumps(rel(None, None)))) == [[], []]

    @pytest.mark.parametrize("text", ["not json", '{"plan": 1}', '{"tasks": [1]}', "[]"])
    def test_anything_else_is_left_for_the_compiler(self, text: str) -> None:
        assert plan_from_relative(text) == text

    def test_pool_plans_round_trip(self) -> None:
        for source, _, tasks in example_pool()[0]:
            back = deps(plan_from_relative(relative_example(tasks)))
            assert back == [sorted(d) for _, d in tasks], source

    def test_a_shape_without_a_word_is_refused(self) -> None:
        with pytest.raises(ValueError, match="no word"):
            relative_example((("a", ()), ("b", ()), ("c", ("t1",))))


class TestPrompts:
    def test_relative_messages_show_the_nearest_examples_in_their_form(self) -> None:
        goal = "Set an alarm for 7 am and then a reminder to call the bank"
        messages = planning_messages(goal, relative=True)
        assert messages[0]["content"].startswith(EMBEDDED_PLANNER_SYSTEM)
        shots = messages[1:-1]
        nearest = nearest_examples(goal)
        assert len(shots) == 2 * len(nearest) == 6
        for (_, request, _), user, assistant in zip(nearest, shots[::2], shots[1::2], strict=True):
            assert user == {"role": "user", "content": f"Goal: {request}"}
            assert valid(relative_plan_schema(7), json.loads(assistant["content"]))
        assert messages[-1] == {"role": "user", "content": f"Goal: {goal}"}

    def test_other_models_are_asked_as_before(self) -> None:
        messages = planning_messages("Plan a trip")
        assert messages[0]["content"] == PLANNER_SYSTEM
        assert len(messages) == 2 + 2 * len(PLAN_EXAMPLES)
        assert all('"after"' not in m["content"] for m in messages)

    def test_retry_keeps_the_form(self) -> None:
        messages = planning_retry_messages("g", '{"tasks": []}', "empty", relative=True)
        assert messages[0]["content"].startswith(EMBEDDED_PLANNER_SYSTEM)

    def test_nearest_examples_are_the_most_alike_closest_last(self) -> None:
        nearest = nearest_examples("set an alarm clock for tomorrow morning", k=3)
        assert all("alarm" in request.lower() for _, request, _ in nearest)
        pool = example_pool()[0]
        exact = pool[10]
        assert nearest_examples(exact[1], k=3)[-1] == exact  # a pool request finds itself, last


class TestExamplesAreNotGraded:
    """Few-shot plans come from dev plans that plan_quality does not grade, at any sample size used."""

    @pytest.mark.parametrize("n", [1, 30, 40])
    def test_disjoint_from_plan_quality_sample(self, n: int) -> None:
        from benchmarks.plan_quality import select

        graded = {r["id"] for r in select(n)}
        shown = {source for source, _, _ in (*PLAN_EXAMPLES, *example_pool()[0])}
        assert len(graded) == n and not graded & shown

    def test_examples_are_real_dev_records(self) -> None:
        from benchmarks.data import load_dev

        dev = {r["id"]: r for r in load_dev()}
        for source, request, tasks in (*PLAN_EXAMPLES, *example_pool()[0]):
            record = dev[source]
            assert " ".join(record["request"].split()) == " ".join(request.split()), source
            assert len(record["tasks"]) == len(tasks), source
