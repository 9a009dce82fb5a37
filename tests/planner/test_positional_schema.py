"""The embedded model's plan schema: it must admit every plan of 1..max tasks, not only max.

llama.cpp's chat endpoint turns a `prefixItems` list into a fixed tuple and ignores
`minItems`/`maxItems`; the schema must therefore not rely on them (see
`positional_plan_schema`). Checked on the schema itself, with a JSON Schema validator.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from planner.models import positional_plan_schema


def plan(*deps: list[str]) -> dict[str, Any]:
    return {"tasks": [{"id": f"t{i}", "description": f"step {i}", "depends_on": d} for i, d in enumerate(deps, 1)]}


def valid(schema: dict[str, Any], instance: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


class TestLengths:
    @pytest.mark.parametrize("n", range(1, 8))
    def test_every_length_up_to_max_is_admitted(self, n: int) -> None:
        schema = positional_plan_schema(7)
        assert valid(schema, plan(*[[] for _ in range(n)]))
        assert valid(schema, plan([], *[[f"t{i}"] for i in range(1, n)]))  # a chain of n

    def test_more_than_max_and_none_are_refused(self) -> None:
        schema = positional_plan_schema(3)
        assert not valid(schema, plan([], [], [], []))
        assert not valid(schema, {"tasks": []})

    def test_each_alternative_is_an_exact_tuple_whichever_way_it_is_read(self) -> None:
        # llama.cpp's GBNF converter reads prefixItems as an exact tuple and ignores
        # minItems/maxItems; a JSON Schema validator needs them to refuse extra items.
        tasks = positional_plan_schema(5)["properties"]["tasks"]
        lengths = []
        for alternative in tasks["anyOf"]:
            n = len(alternative["prefixItems"])
            assert alternative["minItems"] == alternative["maxItems"] == n
            assert "items" not in alternative  # `items: false` is refused by the chat endpoint
            lengths.append(n)
        assert lengths == [1, 2, 3, 4, 5]

    def test_task_schemas_are_shared_definitions(self) -> None:
        schema = positional_plan_schema(7)
        assert sorted(schema["$defs"]) == [f"t{i}" for i in range(1, 8)]
        refs = {item["$ref"] for alt in schema["properties"]["tasks"]["anyOf"] for item in alt["prefixItems"]}
        assert refs == {f"#/$defs/t{i}" for i in range(1, 8)}

    def test_max_tasks_below_one_is_a_mistake(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            positional_plan_schema(0)


class TestOnlyDags:
    def test_a_task_may_depend_only_on_earlier_ones(self) -> None:
        schema = positional_plan_schema(4)
        assert valid(schema, plan([], [], ["t1", "t2"], ["t3"]))
        assert not valid(schema, plan(["t2"], []))  # forward
        assert not valid(schema, plan([], ["t2"]))  # itself

    def test_ids_are_positional_and_descriptions_non_empty(self) -> None:
        schema = positional_plan_schema(3)
        wrong_id = plan([], [])
        wrong_id["tasks"][1]["id"] = "t3"
        assert not valid(schema, wrong_id)
        empty = plan([])
        empty["tasks"][0]["description"] = ""
        assert not valid(schema, empty)
