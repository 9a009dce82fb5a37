"""`planner.compiler`: lenient repairs of model-made plans, strict checks of given plans,
and the benchmark plans compiled both ways."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from planner.compiler import STRICT_MAX_TASKS, CompiledPlan, compile_plan, extract_json
from planner.errors import (
    CycleError,
    DuplicateTaskIdError,
    EmptyPlanError,
    PlanError,
    PlanParseError,
    PlanTooLargeError,
    SelfLoopError,
    UnknownDependencyError,
)

CLEAN = {
    "tasks": [
        {"id": "t1", "description": "Research flights", "depends_on": []},
        {"id": "t2", "description": "Research hotels", "depends_on": []},
        {"id": "t3", "description": "Write itinerary", "depends_on": ["t1", "t2"]},
    ]
}
CLEAN_TEXT = json.dumps(CLEAN)


def shape(compiled: CompiledPlan) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(t.id, t.description, t.depends_on) for t in compiled.plan.tasks]


def kinds(compiled: CompiledPlan) -> list[tuple[str, str | None]]:
    return [(r.kind, r.task_id) for r in compiled.repairs]


def lenient(raw: Any, **kw: Any) -> CompiledPlan:
    """Compile leniently; a Python list is the task list (a bare JSON array is a repair of its own)."""
    return compile_plan({"tasks": raw} if isinstance(raw, list) else raw, strict=False, **kw)


def strict(raw: Any) -> CompiledPlan:
    return compile_plan(raw, strict=True)


def _chain(n: int) -> dict[str, Any]:
    return {
        "tasks": [
            {"id": f"t{i}", "description": f"step {i}", "depends_on": [f"t{i - 1}"] if i else []}
            for i in range(n)
        ]
    }


EXPECTED_CLEAN = [
    ("t1", "Research flights", ()),
    ("t2", "Research hotels", ()),
    ("t3", "Write itinerary", ("t1", "t2")),
]


# ---------------------------------------------------------------------------
# lenient: finding the JSON
# ---------------------------------------------------------------------------


class TestLenientFindsTheJson:
    def test_clean_plan_has_no_repairs(self) -> None:
        compiled = lenient(CLEAN_TEXT)
        assert shape(compiled) == EXPECTED_CLEAN
        assert compiled.repairs == ()

    def test_prose_wrapped(self) -> None:
        text = f"Sure! Here is the plan you asked for:\n{CLEAN_TEXT}\nLet me know if it helps."
        assert shape(lenient(text)) == EXPECTED_CLEAN

    def test_json_code_fence(self) -> None:
        text = f"Here you go.\n```json\n{json.dumps(CLEAN, indent=2)}\n```\nDone."
        assert shape(lenient(text)) == EXPECTED_CLEAN

    def test_bare_code_fence(self) -> None:
        assert shape(lenient(f"```\n{CLEAN_TEXT}\n```")) == EXPECTED_CLEAN

    def test_bare_list(self) -> None:
        compiled = lenient(json.dumps(CLEAN["tasks"]))
        assert shape(compiled) == EXPECTED_CLEAN
        assert kinds(compiled) == [("unwrapped_task_list", None)]

    @pytest.mark.parametrize("key", ["steps", "plan", "subtasks"])
    def test_other_list_keys(self, key: str) -> None:
        compiled = lenient(json.dumps({key: CLEAN["tasks"]}))
        assert shape(compiled) == EXPECTED_CLEAN
        assert kinds(compiled) == [("renamed_task_list", None)]
        assert f'"{key}"' in compiled.repairs[0].detail

    def test_single_list_under_any_key(self) -> None:
        compiled = lenient({"todo": CLEAN["tasks"], "note": "x"})
        assert shape(compiled) == EXPECTED_CLEAN
        assert kinds(compiled) == [("renamed_task_list", None)]

    def test_the_tasks_key_needs_no_repair(self) -> None:
        assert kinds(lenient(CLEAN)) == []

    def test_bytes_and_python_data(self) -> None:
        assert shape(lenient(CLEAN_TEXT.encode())) == EXPECTED_CLEAN
        assert shape(lenient(CLEAN)) == EXPECTED_CLEAN
        assert shape(lenient(CLEAN["tasks"])) == EXPECTED_CLEAN

    def test_single_task_object_is_wrapped(self) -> None:
        compiled = lenient('{"id": "only", "description": "Do it"}')
        assert shape(compiled) == [("only", "Do it", ())]
        assert kinds(compiled) == [("wrapped_single_task", None)]

    def test_extract_json_prefers_whole_text(self) -> None:
        assert extract_json('  {"a": [1]}  ') == {"a": [1]}

    def test_prose_with_bracketed_reference_before_plan(self) -> None:
        text = f"Following the usual template [1], here is the plan: {CLEAN_TEXT}"
        assert shape(lenient(text)) == EXPECTED_CLEAN


# ---------------------------------------------------------------------------
# lenient: repairs
# ---------------------------------------------------------------------------


class TestLenientIdCoercion:
    def test_int_float_and_null_ids(self) -> None:
        raw = [
            {"id": 1, "description": "one"},
            {"id": 2.0, "description": "two", "depends_on": [1]},
            {"id": None, "description": "three", "depends_on": [2, 1.0]},
            {"id": 4.5, "description": "four", "depends_on": ["t3"]},
        ]
        compiled = lenient(raw)
        assert shape(compiled) == [
            ("1", "one", ()),
            ("2", "two", ("1",)),
            ("t3", "three", ("2", "1")),
            ("4.5", "four", ("t3",)),
        ]
        assert kinds(compiled) == [("generated_id", "t3")]

    def test_missing_id_and_bare_string_tasks_get_positional_ids(self) -> None:
        compiled = lenient(["Find flights", {"description": "Book hotel", "depends_on": ["t1"]}])
        assert shape(compiled) == [("t1", "Find flights", ()), ("t2", "Book hotel", ("t1",))]
        assert kinds(compiled) == [("wrapped_string_task", "t1"), ("generated_id", "t2")]

    @pytest.mark.parametrize("bad", [True, [], {}, "  "])
    def test_unusable_id_is_generated(self, bad: Any) -> None:
        compiled = lenient([{"id": bad, "description": "x"}])
        assert shape(compiled) == [("t1", "x", ())]
        assert kinds(compiled) == [("generated_id", "t1")]

    def test_generated_id_does_not_steal_an_explicit_id(self) -> None:
        raw = [
            {"description": "untitled first step"},
            {"id": "t1", "description": "the real t1"},
            {"id": "c", "description": "use t1", "depends_on": ["t1"]},
        ]
        plan = lenient(raw).plan
        [dep] = plan.by_id["c"].depends_on
        assert plan.by_id[dep].description == "the real t1"

    def test_alternative_field_names(self) -> None:
        raw = [
            {"id": "a", "task": "first"},
            {"id": "b", "name": "second", "dependencies": ["a"]},
            {"id": "c", "title": "third", "requires": ["b"]},
        ]
        compiled = lenient(raw)
        assert shape(compiled) == [("a", "first", ()), ("b", "second", ("a",)), ("c", "third", ("b",))]
        assert compiled.repairs == ()

    def test_non_string_description_is_serialised(self) -> None:
        assert shape(lenient([{"id": "a", "description": {"do": 1}}])) == [("a", '{"do": 1}', ())]

    def test_whitespace_stripped_from_description(self) -> None:
        assert shape(lenient([{"id": "a", "description": "  pad  "}])) == [("a", "pad", ())]


class TestLenientDependsOn:
    def test_comma_string(self) -> None:
        raw = [
            {"id": 1, "description": "a"},
            {"id": 2, "description": "b"},
            {"id": 3, "description": "c", "depends_on": "1, 2"},
        ]
        compiled = lenient(raw)
        assert compiled.plan.by_id["3"].depends_on == ("1", "2")
        assert kinds(compiled) == [("coerced_depends_on", "3")]

    def test_space_separated_string(self) -> None:
        raw = [{"id": "a", "description": "a"}, {"id": "b", "description": "b"},
               {"id": "c", "description": "c", "depends_on": "a b"}]
        assert lenient(raw).plan.by_id["c"].depends_on == ("a", "b")

    def test_int_and_float(self) -> None:
        raw = [
            {"id": 1, "description": "a"},
            {"id": 2, "description": "b", "depends_on": 1},
            {"id": 3, "description": "c", "depends_on": 2.0},
        ]
        compiled = lenient(raw)
        assert compiled.plan.by_id["2"].depends_on == ("1",)
        assert compiled.plan.by_id["3"].depends_on == ("2",)
        assert kinds(compiled) == [("coerced_depends_on", "2"), ("coerced_depends_on", "3")]

    def test_null_means_no_dependencies(self) -> None:
        compiled = lenient([{"id": "a", "description": "a", "depends_on": None}])
        assert compiled.plan.by_id["a"].depends_on == () and compiled.repairs == ()

    def test_unusable_container_dropped(self) -> None:
        compiled = lenient([{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": {"a": 1}}])
        assert compiled.plan.by_id["b"].depends_on == ()
        assert kinds(compiled) == [("dropped_depends_on", "b")]

    def test_invalid_dependency_entries_dropped(self) -> None:
        raw = [{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": ["a", True, None, [1]]}]
        compiled = lenient(raw)
        assert compiled.plan.by_id["b"].depends_on == ("a",)
        assert kinds(compiled) == [("dropped_invalid_dependency", "b")] * 3


class TestLenientGraphRepairs:
    def test_self_loop_removed(self) -> None:
        compiled = lenient([{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": ["b", "a"]}])
        assert compiled.plan.by_id["b"].depends_on == ("a",)
        assert kinds(compiled) == [("dropped_self_loop", "b")]

    def test_duplicate_edges_removed(self) -> None:
        compiled = lenient([{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": ["a", "a"]}])
        assert compiled.plan.by_id["b"].depends_on == ("a",)
        assert kinds(compiled) == [("dropped_duplicate_edge", "b")]
        assert "'a'" in compiled.repairs[0].detail

    def test_unknown_dependency_dropped(self) -> None:
        compiled = lenient([{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": ["a", "zz"]}])
        assert compiled.plan.by_id["b"].depends_on == ("a",)
        assert kinds(compiled) == [("dropped_unknown_dependency", "b")]
        assert "'zz'" in compiled.repairs[0].detail

    def test_duplicate_id_same_text_merged_with_union_of_deps(self) -> None:
        raw = [
            {"id": "a", "description": "A"},
            {"id": "b", "description": "B"},
            {"id": "c", "description": "Write it up", "depends_on": ["a"]},
            {"id": "c", "description": "  write IT   up ", "depends_on": ["b", "a"]},
        ]
        compiled = lenient(raw)
        assert shape(compiled) == [("a", "A", ()), ("b", "B", ()), ("c", "Write it up", ("a", "b"))]
        assert kinds(compiled) == [("merged_duplicate", "c")]

    def test_duplicate_id_different_text_renamed(self) -> None:
        raw = [
            {"id": "a", "description": "first"},
            {"id": "a", "description": "second"},
            {"id": "a", "description": "third"},
            {"id": "z", "description": "uses a", "depends_on": ["a"]},
        ]
        compiled = lenient(raw)
        assert shape(compiled) == [
            ("a", "first", ()),
            ("a_2", "second", ()),
            ("a_3", "third", ()),
            ("z", "uses a", ("a",)),
        ]
        assert kinds(compiled) == [("renamed_duplicate", "a_2"), ("renamed_duplicate", "a_3")]

    def test_renamed_duplicate_does_not_steal_a_later_id(self) -> None:
        raw = [
            {"id": "a", "description": "first"},
            {"id": "a", "description": "second"},
            {"id": "a_2", "description": "explicit a_2"},
            {"id": "c", "description": "use a_2", "depends_on": ["a_2"]},
        ]
        plan = lenient(raw).plan
        [dep] = plan.by_id["c"].depends_on
        assert plan.by_id[dep].description == "explicit a_2"

    def test_empty_description_task_dropped_and_dependents_repaired(self) -> None:
        raw = [
            {"id": "a", "description": "  "},
            {"id": "b", "description": "b", "depends_on": ["a"]},
        ]
        compiled = lenient(raw)
        assert shape(compiled) == [("b", "b", ())]
        assert kinds(compiled) == [("dropped_empty_task", "a"), ("dropped_unknown_dependency", "b")]

    def test_every_repair_has_detail(self) -> None:
        raw = [
            "bare",
            {"id": "x", "description": "x", "depends_on": "x t1 nope"},
            {"id": "x", "description": "other"},
        ]
        compiled = lenient(raw)
        assert kinds(compiled) == [
            ("wrapped_string_task", "t1"),
            ("coerced_depends_on", "x"),
            ("renamed_duplicate", "x_2"),
            ("dropped_self_loop", "x"),
            ("dropped_unknown_dependency", "x"),
        ]
        assert all(r.detail for r in compiled.repairs)


class TestLenientRejects:
    @pytest.mark.parametrize("raw", ["[]", '{"tasks": []}', '```json\n{"steps": []}\n```', [], {"tasks": []}])
    def test_empty_plan(self, raw: Any) -> None:
        with pytest.raises(EmptyPlanError) as info:
            lenient(raw)
        assert str(info.value) == "the plan has no tasks"

    def test_empty_object_is_not_a_plan(self) -> None:
        with pytest.raises(PlanParseError) as info:
            lenient("{}")
        assert "not a JSON dict" in str(info.value)

    def test_all_tasks_dropped_is_empty_plan(self) -> None:
        with pytest.raises(EmptyPlanError):
            lenient([{"id": "a", "description": ""}, {"id": "b"}])

    def test_over_max_tasks(self) -> None:
        with pytest.raises(PlanTooLargeError) as info:
            lenient(_chain(13), max_tasks=12)
        assert (info.value.count, info.value.limit) == (13, 12)
        assert "13 tasks" in str(info.value) and "limit of 12" in str(info.value)

    def test_at_max_tasks_is_fine(self) -> None:
        assert len(lenient(_chain(12), max_tasks=12).plan.tasks) == 12

    def test_cycle_named(self) -> None:
        raw = [
            {"id": "c", "description": "c", "depends_on": ["a"]},
            {"id": "a", "description": "a", "depends_on": ["b"]},
            {"id": "b", "description": "b", "depends_on": ["c"]},
        ]
        with pytest.raises(CycleError) as info:
            lenient(raw)
        assert info.value.cycle == ["a", "b", "c", "a"]
        assert "a -> b -> c -> a" in str(info.value)

    @pytest.mark.parametrize("text", ["hello there", "", "   ", "{not json", "[1, 2", "no braces at all"])
    def test_garbage_text(self, text: str) -> None:
        with pytest.raises(PlanParseError) as info:
            lenient(text)
        assert "no JSON plan found" in str(info.value)

    @pytest.mark.parametrize("raw", ['{"foo": 1}', '"just a string"', "42"])
    def test_json_that_is_not_a_plan(self, raw: str) -> None:
        with pytest.raises(PlanParseError):
            lenient(raw)

    def test_non_object_task(self) -> None:
        with pytest.raises(PlanParseError) as info:
            lenient([{"id": "a", "description": "a"}, 7])
        assert "task #2" in str(info.value)

    def test_invalid_utf8_bytes(self) -> None:
        with pytest.raises(PlanParseError) as info:
            lenient(b'{"tasks": [\xff]}')
        assert "UTF-8" in str(info.value)


# ---------------------------------------------------------------------------
# strict
# ---------------------------------------------------------------------------


class TestStrictAccepts:
    def test_clean_plan(self) -> None:
        compiled = strict(CLEAN_TEXT)
        assert shape(compiled) == EXPECTED_CLEAN and compiled.repairs == ()

    def test_numeric_ids_become_strings(self) -> None:
        compiled = strict('{"tasks": [{"id": 1, "description": "a"}, {"id": 2, "description": "b", "depends_on": [1]}]}')
        assert shape(compiled) == [("1", "a", ()), ("2", "b", ("1",))]

    def test_depends_on_optional(self) -> None:
        assert shape(strict('{"tasks": [{"id": "a", "description": "a"}]}')) == [("a", "a", ())]

    def test_allows_1000_tasks_regardless_of_max_tasks(self) -> None:
        compiled = compile_plan(json.dumps(_chain(STRICT_MAX_TASKS)), strict=True, max_tasks=5)
        assert STRICT_MAX_TASKS == 1000
        assert len(compiled.plan.tasks) == 1000
        assert compiled.plan.graph.topological_order()[-1] == "t999"

    def test_rejects_1001_tasks(self) -> None:
        with pytest.raises(PlanTooLargeError) as info:
            strict(json.dumps(_chain(1001)))
        assert (info.value.count, info.value.limit) == (1001, 1000)


class TestStrictRejects:
    def test_not_json_names_line_and_column(self) -> None:
        text = '{"tasks": [\n  {"id": "a", "description": "x",}\n]}'
        with pytest.raises(PlanParseError) as info:
            strict(text)
        assert "not valid JSON" in str(info.value)
        assert "line 2 column" in str(info.value)

    def test_prose_wrapped_json_rejected(self) -> None:
        with pytest.raises(PlanParseError):
            strict(f"Here is my plan: {CLEAN_TEXT}")

    def test_object_without_tasks(self) -> None:
        with pytest.raises(PlanParseError) as info:
            strict('{"foo": 1}')
        assert '"tasks"' in str(info.value)

    def test_steps_key_rejected(self) -> None:
        with pytest.raises(PlanParseError):
            strict(json.dumps({"steps": CLEAN["tasks"]}))

    def test_bare_list_rejected(self) -> None:
        with pytest.raises(PlanParseError) as info:
            strict(json.dumps(CLEAN["tasks"]))
        assert "not a JSON list" in str(info.value)

    def test_empty(self) -> None:
        with pytest.raises(EmptyPlanError):
            strict('{"tasks": []}')

    def test_cycle(self) -> None:
        raw = {"tasks": [
            {"id": "b", "description": "b", "depends_on": ["a"]},
            {"id": "a", "description": "a", "depends_on": ["b"]},
        ]}
        with pytest.raises(CycleError) as info:
            strict(json.dumps(raw))
        assert "a -> b -> a" in str(info.value)

    def test_self_loop(self) -> None:
        raw = {"tasks": [{"id": "a", "description": "a", "depends_on": ["a"]}]}
        with pytest.raises(SelfLoopError) as info:
            strict(json.dumps(raw))
        assert "'a' depends on itself" in str(info.value)

    def test_unknown_dependency(self) -> None:
        raw = {"tasks": [{"id": "a", "description": "a", "depends_on": ["ghost"]}]}
        with pytest.raises(UnknownDependencyError) as info:
            strict(json.dumps(raw))
        assert "'a'" in str(info.value) and "'ghost'" in str(info.value)

    def test_duplicate_id_even_with_same_text(self) -> None:
        raw = {"tasks": [{"id": "a", "description": "same"}, {"id": "a", "description": "same"}]}
        with pytest.raises(DuplicateTaskIdError) as info:
            strict(json.dumps(raw))
        assert info.value.task_id == "a" and "duplicate task id 'a'" in str(info.value)

    def test_duplicate_id_int_and_string(self) -> None:
        raw = {"tasks": [{"id": 1, "description": "x"}, {"id": "1", "description": "y"}]}
        with pytest.raises(DuplicateTaskIdError):
            strict(json.dumps(raw))

    @pytest.mark.parametrize("field", ["dependencies", "name", "deps"])
    def test_unknown_field_named(self, field: str) -> None:
        raw = {"tasks": [{"id": "a", "description": "a", field: []}]}
        with pytest.raises(PlanParseError) as info:
            strict(json.dumps(raw))
        assert repr(field) in str(info.value)

    @pytest.mark.parametrize("deps", ["a", "a, b", 1, 1.0, {"a": 1}])
    def test_depends_on_not_a_list(self, deps: Any) -> None:
        raw = {"tasks": [{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": deps}]}
        with pytest.raises(PlanParseError) as info:
            strict(json.dumps(raw))
        assert "depends_on of task 'b' must be a list" in str(info.value)

    @pytest.mark.parametrize("dep", [None, True, [], ""])
    def test_invalid_dependency_entry(self, dep: Any) -> None:
        raw = {"tasks": [{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": [dep]}]}
        with pytest.raises(PlanParseError) as info:
            strict(json.dumps(raw))
        assert "invalid dependency" in str(info.value)

    @pytest.mark.parametrize("bad_id", [None, "", "  ", True, [1]])
    def test_missing_or_invalid_id(self, bad_id: Any) -> None:
        raw = {"tasks": [{"id": bad_id, "description": "a"}]}
        with pytest.raises(PlanParseError) as info:
            strict(json.dumps(raw))
        assert "task #1 has no id" in str(info.value)

    def test_missing_description(self) -> None:
        with pytest.raises(PlanParseError) as info:
            strict('{"tasks": [{"id": "a", "description": "  "}]}')
        assert "'a' has no description" in str(info.value)

    def test_bare_string_task(self) -> None:
        with pytest.raises(PlanParseError) as info:
            strict('{"tasks": ["just do it"]}')
        assert "task #1 is a JSON str" in str(info.value)

    def test_duplicate_edge_is_a_defect(self) -> None:
        raw = {"tasks": [{"id": "a", "description": "a"}, {"id": "b", "description": "b", "depends_on": ["a", "a"]}]}
        with pytest.raises(PlanError):
            strict(json.dumps(raw))

    def test_non_string_description_is_a_defect(self) -> None:
        with pytest.raises(PlanParseError):
            strict('{"tasks": [{"id": "a", "description": 5}]}')


class TestNeverAnotherException:
    """compile_plan promises a Plan or a PlanError; these inputs break that promise."""

    @pytest.mark.parametrize("mode", [True, False], ids=["strict", "lenient"])
    def test_huge_integer_id(self, mode: bool) -> None:
        text = '{"tasks": [{"id": ' + "1" * 5000 + ', "description": "x"}]}'
        with pytest.raises(PlanError):
            compile_plan(text, strict=mode)

    @pytest.mark.parametrize("mode", [True, False], ids=["strict", "lenient"])
    def test_deeply_nested_json(self, mode: bool) -> None:
        with pytest.raises(PlanError):
            compile_plan("[" * 100_000, strict=mode)


# ---------------------------------------------------------------------------
# the benchmark's gold plans
# ---------------------------------------------------------------------------


# The dev split shipped with the repository (benchmarks/data/README.md): never skipped.
DEV_PLANS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "dev.jsonl.gz"


class TestBenchdata:
    def test_every_dev_plan_compiles_unchanged_both_ways(self) -> None:
        path = DEV_PLANS
        count = 0
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                record = json.loads(line)
                text = json.dumps({"tasks": record["tasks"]})
                where = record["id"]
                for compiled in (compile_plan(text, strict=True), compile_plan(text, strict=False, max_tasks=20)):
                    assert compiled.repairs == (), where
                    assert compiled.plan.to_json_dict()["tasks"] == record["tasks"], where
                waves = compiled.plan.graph.waves()
                assert len(waves) == record["depth"], where
                assert max(len(w) for w in waves) == record["max_width"], where
                assert len(compiled.plan.tasks) == record["n_nodes"], where
                count += 1
        assert count >= 4000, f"only {count} records read from {path}"
