"""The diff between plan versions, the state a version ended in, and how both are drawn."""

from __future__ import annotations

from planner.models import Plan, Task
from planner.plan_diff import PlanDiff, final_statuses, plan_diff
from planner.render import change_markdown, plan_markdown, plan_to_mermaid, replan_markdown


def plan(*tasks: tuple[str, list[str]] | tuple[str, list[str], str]) -> Plan:
    return Plan(
        tasks=tuple(Task(id=t[0], description=t[2] if len(t) > 2 else f"do {t[0]}", depends_on=tuple(t[1])) for t in tasks)
    )


V1 = plan(("a", []), ("b", ["a"]), ("c", ["b"]), ("x", []))


class TestPlanDiff:
    def test_retry_modified_pairs_the_failed_task_with_its_rewrite(self) -> None:
        v2 = plan(("a", []), ("v2.1", ["a"]), ("c", ["v2.1"]), ("x", []))
        diff = plan_diff(V1, v2, failed="b", action="retry_modified")
        assert diff == PlanDiff(kept=("a", "x"), changed=("c",), replaced=(("b", "v2.1"),))

    def test_skip_removes_the_failed_task(self) -> None:
        v2 = plan(("a", []), ("c", ["a"], "do c without b"), ("x", []))
        assert plan_diff(V1, v2, failed="b", action="skip") == PlanDiff(kept=("a", "x"), changed=("c",), removed=("b",))

    def test_full_replan_removes_the_remaining_work_and_adds_new_tasks(self) -> None:
        v2 = plan(("a", []), ("x", []), ("v2.1", ["a"]), ("v2.2", ["v2.1", "x"]))
        diff = plan_diff(V1, v2, failed="b", action="replan")
        assert diff == PlanDiff(kept=("a", "x"), added=("v2.1", "v2.2"), removed=("b", "c"))

    def test_without_the_action_nothing_is_called_a_replacement(self) -> None:
        v2 = plan(("a", []), ("v2.1", ["a"]), ("c", ["v2.1"]), ("x", []))
        diff = plan_diff(V1, v2, failed="b", action="edited")
        assert (diff.replaced, diff.added, diff.removed) == ((), ("v2.1",), ("b",))


class TestFinalStatuses:
    def test_a_superseded_version_shows_what_ran_what_was_dropped_and_what_never_ran(self) -> None:
        v2 = plan(("a", []), ("v2.1", ["a"]), ("c", ["v2.1"]), ("x", []))
        ledger = {"a": "completed", "b": "failed", "c": "pending", "x": "cached"}
        assert final_statuses(V1, ledger, v2) == {"a": "completed", "b": "failed", "c": "skipped", "x": "cached"}
        replanned = plan(("a", []), ("x", []), ("v2.1", ["a"]))
        assert final_statuses(V1, ledger, replanned)["c"] == "replaced"

    def test_at_the_end_of_a_run_every_task_that_never_ran_was_skipped(self) -> None:
        ledger = {"a": "completed", "b": "failed", "c": "running"}
        assert final_statuses(V1, ledger) == {"a": "completed", "b": "failed", "c": "skipped", "x": "skipped"}


class TestRendering:
    def test_the_graph_has_a_legend_of_the_colours_it_uses(self) -> None:
        graph = plan_to_mermaid(V1, {"a": "completed", "b": "failed", "c": "replaced", "x": "skipped"})
        assert "subgraph legend [Legend]" in graph
        for status in ("completed", "failed", "replaced", "skipped"):
            assert f"class legend_{status} {status}" in graph and f"classDef {status} " in graph
        assert "legend_cached" not in graph
        assert graph.count(":::") == 4, "only plan nodes are coloured with :::"

    def test_a_fresh_plan_has_no_legend(self) -> None:
        assert "legend" not in plan_to_mermaid(V1).lower()
        assert "Legend" not in plan_markdown(V1, 1)

    def test_plan_markdown_carries_title_sections_and_the_legend_meanings(self) -> None:
        text = plan_markdown(
            V1, 1, {"a": "completed", "b": "failed"}, "initial plan", title="Plan v1: final state", sections=["WHY"]
        )
        assert text.startswith("## Plan v1: final state\n\n_initial plan_\n\nWHY\n")
        assert "**failed**: failed for good" in text
        assert "| `b` | do b | `a` | failed |" in text

    def test_change_markdown_names_the_failure_the_action_and_the_diff(self) -> None:
        diff = PlanDiff(kept=("a",), changed=("c",), replaced=(("b", "v2.1"),), removed=("x",))
        text = change_markdown(1, diff, action="retry_modified", failed="b", error="HTTP 400: prompt too long")
        assert "**Failed in v1:** `b`" in text and "HTTP 400: prompt too long" in text
        assert "**Action:** `retry_modified`" in text
        assert "| replaced | `b` → `v2.1` |" in text and "| removed | `x` |" in text and "| added | — |" in text

    def test_replan_markdown_shows_the_decision_and_the_new_tasks(self) -> None:
        new = [Task(id="v2.1", description="do b | briefly", depends_on=("a",))]
        text = replan_markdown(2, V1.by_id["b"], "boom", action="retry_modified", reason="shorter", new_tasks=new)
        assert "**Failed task:** `b`: do b" in text and "**Error:** boom" in text
        assert "**Decision:** `retry_modified`: shorter" in text
        assert "| `v2.1` | do b \\| briefly | `a` |" in text
        rejected = replan_markdown(2, V1.by_id["b"], "boom", rejected="a cycle")
        assert "**Rejected:**" in rejected and "a cycle" in rejected
