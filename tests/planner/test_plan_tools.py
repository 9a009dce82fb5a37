"""The planner knows the tools: the catalogue in the planning prompt, `tools` in the
plan schema and cache key, and the compiler's check of the names a task gives."""

from __future__ import annotations

import json

import pytest

from flows.tasks import PlanningSpec, planning_schema
from planner.cache_keys import plan_cache_key
from planner.compiler import compile_plan
from planner.errors import PlanParseError
from planner.models import Plan, Task
from planner.prompts import PLANNER_SYSTEM, planning_messages, planning_retry_messages, replan_messages
from planner.replanning import apply_decision, parse_decision

CATALOGUE = (("calculator", "Evaluate arithmetic."), ("send_notice", "Send a notice\n to a team."))
KNOWN = [name for name, _ in CATALOGUE]


def plan_text(*tasks: dict) -> str:
    return json.dumps({"tasks": list(tasks)})


class TestCompiler:
    def test_names_kept_without_a_check(self) -> None:
        compiled = compile_plan(plan_text({"id": "a", "description": "x", "tools": ["anything"]}))
        assert compiled.plan.tasks[0].tools == ("anything",)
        assert compiled.repairs == ()

    def test_known_names_kept_unknown_dropped_as_repair(self) -> None:
        raw = plan_text(
            {"id": "a", "description": "x", "tools": ["calculator", "rm_rf", "send_notice"]},
            {"id": "b", "description": "y", "depends_on": ["a"]},
        )
        compiled = compile_plan(raw, known_tools=KNOWN)
        assert [t.tools for t in compiled.plan.tasks] == [("calculator", "send_notice"), ()]
        assert [(r.kind, r.task_id) for r in compiled.repairs] == [("dropped_unknown_tool", "a")]
        assert "rm_rf" in compiled.repairs[0].detail

    def test_no_tools_means_every_name_is_unknown(self) -> None:
        compiled = compile_plan(plan_text({"id": "a", "description": "x", "tools": ["calculator"]}), known_tools=[])
        assert compiled.plan.tasks[0].tools == ()
        assert [r.kind for r in compiled.repairs] == ["dropped_unknown_tool"]

    def test_lenient_shapes_repaired(self) -> None:
        raw = plan_text(
            {"id": "a", "description": "x", "tools": "calculator, send_notice"},
            {"id": "b", "description": "y", "tools": {"calculator": True}},
            {"id": "c", "description": "z", "tools": ["calculator", "calculator", 5, " "]},
        )
        compiled = compile_plan(raw, known_tools=KNOWN)
        assert [t.tools for t in compiled.plan.tasks] == [("calculator", "send_notice"), (), ("calculator",)]
        kinds = [r.kind for r in compiled.repairs]
        assert kinds == [
            "coerced_tools", "dropped_tools", "dropped_duplicate_tool", "dropped_invalid_tool", "dropped_invalid_tool"
        ]

    def test_merged_duplicates_merge_their_tools(self) -> None:
        raw = plan_text(
            {"id": "a", "description": "same", "tools": ["calculator"]},
            {"id": "a", "description": "Same", "tools": ["send_notice", "calculator"]},
        )
        compiled = compile_plan(raw, known_tools=KNOWN)
        assert compiled.plan.tasks[0].tools == ("calculator", "send_notice")

    def test_strict_accepts_tools_and_rejects_bad_ones(self) -> None:
        assert compile_plan(plan_text({"id": "a", "description": "x", "tools": ["calculator"]}), strict=True).plan.tasks[
            0
        ].tools == ("calculator",)
        with pytest.raises(PlanParseError, match="list of tool names"):
            compile_plan(plan_text({"id": "a", "description": "x", "tools": "calculator"}), strict=True)
        with pytest.raises(PlanParseError, match="unknown tool 'nope'"):
            compile_plan(plan_text({"id": "a", "description": "x", "tools": ["nope"]}), strict=True, known_tools=KNOWN)
        with pytest.raises(PlanParseError, match="'tools'"):
            compile_plan(plan_text({"id": "a", "description": "x", "notes": 1}), strict=True)


class TestSerialisation:
    def test_a_task_without_tools_serialises_as_before(self) -> None:
        assert Task(id="a", description="x").model_dump(mode="json") == {"id": "a", "description": "x", "depends_on": []}
        plan = Plan(tasks=(Task(id="a", description="x", tools=("calculator",)),))
        assert plan.to_json_dict()["tasks"][0]["tools"] == ["calculator"]
        assert Plan.model_validate_json(plan.model_dump_json()) == plan


class TestPrompt:
    def test_without_tools_the_prompt_is_unchanged(self) -> None:
        assert planning_messages("g")[0]["content"] == PLANNER_SYSTEM
        assert planning_messages("g", ())[0]["content"] == PLANNER_SYSTEM

    def test_catalogue_listed_one_line_each(self) -> None:
        system = planning_messages("g", CATALOGUE)[0]["content"]
        assert system.startswith(PLANNER_SYSTEM)
        assert "- calculator: Evaluate arithmetic.\n- send_notice: Send a notice to a team.\n" in system
        assert '"tools"' in system
        retry = planning_retry_messages("g", "{}", "bad", CATALOGUE)
        assert retry[0]["content"] == system

    def test_replanner_sees_the_catalogue(self) -> None:
        failed = Task(id="a", description="x")
        with_tools = replan_messages("g", [], failed, "boom", [failed], 100, tools=CATALOGUE)
        assert "- calculator: Evaluate arithmetic." in with_tools[0]["content"]
        assert "calculator" not in replan_messages("g", [], failed, "boom", [failed], 100)[0]["content"]


class TestKeyAndSchema:
    BASE = dict(run_key="r", goal="g", model="m", prompt_version="v", max_tasks=7)

    def test_key_changes_only_with_a_catalogue(self) -> None:
        plain = plan_cache_key(**self.BASE)
        assert plan_cache_key(**self.BASE, tools=()) == plain
        with_tools = plan_cache_key(**self.BASE, tools=CATALOGUE)
        assert with_tools != plain
        assert plan_cache_key(**self.BASE, tools=CATALOGUE[:1]) != with_tools

    def test_schema_has_tools_only_for_runs_with_tools(self) -> None:
        spec = PlanningSpec(run_key="r", goal="g", model="m", max_tasks=7, max_tokens=100)
        plain = planning_schema(spec)["properties"]["tasks"]["items"]
        assert "tools" not in plain["properties"] and "tools" not in plain["required"]
        tooled = planning_schema(spec.model_copy(update={"tools": CATALOGUE}))["properties"]["tasks"]["items"]
        assert tooled["properties"]["tools"]["type"] == "array"
        assert set(tooled["required"]) == set(tooled["properties"])  # strict mode: every property required
        positional = planning_schema(spec.model_copy(update={"positional_schema": True, "tools": CATALOGUE}))
        assert all("prefixItems" in alt for alt in positional["properties"]["tasks"]["anyOf"])


class TestReplanning:
    PLAN = Plan(
        tasks=(
            Task(id="a", description="fetch", tools=("calculator",)),
            Task(id="b", description="notify", depends_on=("a",), tools=("send_notice",)),
            Task(id="c", description="report", depends_on=("b",)),
        )
    )

    def test_retry_modified_keeps_or_replaces_tools(self) -> None:
        decision = parse_decision({"action": "retry_modified", "reason": "r", "tasks": [{"id": "b", "description": "again"}]})
        outcome = apply_decision(self.PLAN, completed={"a"}, failed="b", decision=decision, version=2, known_tools=KNOWN)
        assert outcome.plan.by_id["a"].tools == ("calculator",)
        assert outcome.plan.by_id["v2.1"].tools == ("send_notice",)
        decision = parse_decision(
            {"action": "retry_modified", "reason": "r", "tasks": [{"id": "b", "description": "again", "tools": ["calculator"]}]}
        )
        outcome = apply_decision(self.PLAN, completed={"a"}, failed="b", decision=decision, version=2, known_tools=KNOWN)
        assert outcome.plan.by_id["v2.1"].tools == ("calculator",)

    def test_replan_tools_checked_and_skip_keeps_them(self) -> None:
        decision = parse_decision(
            {
                "action": "replan",
                "reason": "r",
                "tasks": [{"id": "n1", "description": "new", "depends_on": ["a"], "tools": ["send_notice", "nope"]}],
            }
        )
        outcome = apply_decision(self.PLAN, completed={"a"}, failed="b", decision=decision, version=2, known_tools=KNOWN)
        assert outcome.plan.by_id["v2.1"].tools == ("send_notice",)
        assert "dropped_unknown_tool" in [r.kind for r in outcome.compiled.repairs]
        skip = parse_decision({"action": "skip", "reason": "r", "tasks": []})
        plan = Plan(tasks=(*self.PLAN.tasks[:2], Task(id="c", description="report", depends_on=("b",), tools=("calculator",))))
        outcome = apply_decision(plan, completed={"a"}, failed="b", decision=skip, version=2, known_tools=KNOWN)
        assert outcome.plan.by_id["c"].tools == ("calculator",)
