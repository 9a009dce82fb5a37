"""`planner.cache_keys`: keys change exactly when the work would change, and are safe file names."""

from __future__ import annotations

import re
from typing import Any

import pytest

from planner.cache_keys import node_cache_key, plan_cache_key, synthesis_cache_key

NODE = dict(
    run_key="trip-lisbon-1a2b3c",
    node_id="t2",
    goal="Plan a 3-day trip to Lisbon",
    description="Find hotels near Alfama",
    model="gpt-4o-mini",
    prompt_version="2026-11-28.1",
    upstream_results={"t1": "flights: TAP 9am", "t0": "budget: 900 EUR"},
)
PLAN = dict(run_key="r", goal="g", model="m", prompt_version="p1", max_tasks=12)
SYNTH = dict(run_key="r", goal="g", model="m", prompt_version="p1", sink_results={"t3": "answer"})

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def node(**changes: Any) -> str:
    return node_cache_key(**{**NODE, **changes})


class TestNodeKey:
    def test_deterministic(self) -> None:
        assert node() == node()
        assert node() == node_cache_key(**dict(NODE))

    def test_readable_prefix(self) -> None:
        key = node()
        assert key.startswith("planflow-node-trip-lisbon-1a2b3c-t2-")
        assert re.fullmatch(r"[0-9a-f]{32}", key.rsplit("-", 1)[1])

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("run_key", "trip-lisbon-other"),
            ("node_id", "t3"),
            ("goal", "Plan a 4-day trip to Lisbon"),
            ("description", "Find hotels near Belem"),
            ("model", "gpt-4o"),
            ("prompt_version", "2026-11-28.2"),
            ("upstream_results", {"t1": "flights: TAP 10am", "t0": "budget: 900 EUR"}),
            ("upstream_results", {"t1": "flights: TAP 9am"}),
            ("upstream_results", {}),
            ("upstream_results", {"tX": "flights: TAP 9am", "t0": "budget: 900 EUR"}),
        ],
    )
    def test_each_input_changes_the_key(self, field: str, value: Any) -> None:
        assert node(**{field: value}) != node()

    def test_upstream_order_does_not_matter(self) -> None:
        reordered = dict(reversed(list(NODE["upstream_results"].items())))  # type: ignore[union-attr]
        assert list(reordered) != list(NODE["upstream_results"])  # type: ignore[arg-type]
        assert node(upstream_results=reordered) == node()

    def test_no_field_bleeds_into_another(self) -> None:
        # Moving text between fields must not produce the same key.
        assert node(goal="ab", description="c") != node(goal="a", description="bc")


class TestFileSafety:
    @pytest.mark.parametrize("run_key", ["a/b c", "../../etc/passwd", "x\\y:z*?<>|\"", "tab\tnew\nline", "  "])
    def test_weird_run_keys_are_safe_file_names(self, run_key: str) -> None:
        for key in (
            node(run_key=run_key, node_id="n/1 x"),
            plan_cache_key(**{**PLAN, "run_key": run_key}),
            synthesis_cache_key(**{**SYNTH, "run_key": run_key}),
        ):
            assert SAFE.match(key), key
            assert "/" not in key and ".." not in key.split("-")

    def test_run_keys_that_sanitise_alike_still_differ(self) -> None:
        a, b = node(run_key="a/b"), node(run_key="a_b")
        assert a.startswith("planflow-node-a_b-") and b.startswith("planflow-node-a_b-")
        assert a != b
        assert plan_cache_key(**{**PLAN, "run_key": "a/b"}) != plan_cache_key(**{**PLAN, "run_key": "a_b"})
        assert synthesis_cache_key(**{**SYNTH, "run_key": "a/b"}) != synthesis_cache_key(**{**SYNTH, "run_key": "a_b"})

    def test_node_ids_that_sanitise_alike_still_differ(self) -> None:
        assert node(node_id="a b") != node(node_id="a_b")

    def test_long_ascii_keys_fit_a_file_name(self) -> None:
        key = node(run_key="r" * 500, node_id="n" * 500)
        assert len(key.encode("utf-8")) <= 255

    def test_non_ascii_keys_fit_a_file_name(self) -> None:
        key = node(run_key="é" * 100, node_id="日" * 100)
        assert len(key.encode("utf-8")) <= 255


class TestPlanAndSynthesisKeys:
    def test_plan_key_deterministic_and_prefixed(self) -> None:
        assert plan_cache_key(**PLAN) == plan_cache_key(**PLAN)
        assert plan_cache_key(**PLAN).startswith("planflow-plan-r-")

    @pytest.mark.parametrize(
        ("field", "value"),
        [("run_key", "r2"), ("goal", "g2"), ("model", "m2"), ("prompt_version", "p2"), ("max_tasks", 13)],
    )
    def test_plan_key_changes(self, field: str, value: Any) -> None:
        assert plan_cache_key(**{**PLAN, field: value}) != plan_cache_key(**PLAN)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("run_key", "r2"), ("goal", "g2"), ("model", "m2"), ("prompt_version", "p2"),
         ("sink_results", {"t3": "other"}), ("sink_results", {"t4": "answer"})],
    )
    def test_synthesis_key_changes(self, field: str, value: Any) -> None:
        assert synthesis_cache_key(**{**SYNTH, field: value}) != synthesis_cache_key(**SYNTH)

    def test_synthesis_sink_order_does_not_matter(self) -> None:
        a = synthesis_cache_key(**{**SYNTH, "sink_results": {"x": "1", "y": "2"}})
        b = synthesis_cache_key(**{**SYNTH, "sink_results": {"y": "2", "x": "1"}})
        assert a == b and a.startswith("planflow-answer-r-")

    def test_kinds_never_collide(self) -> None:
        keys = {node(), plan_cache_key(**PLAN), synthesis_cache_key(**SYNTH)}
        assert len(keys) == 3


class TestToolStepKeys:
    def test_tool_less_node_keys_are_unchanged_by_the_tools_parameters(self):
        from planner.cache_keys import node_cache_key

        base = dict(run_key="k", node_id="a", goal="g", description="d", model="m", prompt_version="1", upstream_results={})
        assert node_cache_key(**base) == node_cache_key(**base, tools=(), max_steps=8)
        assert node_cache_key(**base) != node_cache_key(**base, tools=("calculator",), max_steps=8)
        assert node_cache_key(**base, tools=("a", "b"), max_steps=8) == node_cache_key(**base, tools=("b", "a"), max_steps=8)

    def test_a_turn_is_keyed_by_what_it_sends(self):
        from planner.cache_keys import turn_cache_key

        args = dict(run_key="k", node_id="a", step=2, tools=["calculator"], model="m")
        one = turn_cache_key(messages=[{"role": "user", "content": "x"}], **args)
        assert one == turn_cache_key(messages=[{"role": "user", "content": "x"}], **args)
        assert one != turn_cache_key(messages=[{"role": "user", "content": "y"}], **args)
        assert "-s2-" in one

    def test_a_call_is_keyed_by_its_place_and_arguments(self):
        from planner.cache_keys import idempotency_key, tool_call_cache_key

        args = dict(run_key="k", node_id="a", step=1, index=0, tool="send")
        assert tool_call_cache_key(arguments="{}", **args) != tool_call_cache_key(arguments='{"x":1}', **args)
        key = idempotency_key(run_key="k", node_id="a", step=1, index=0)
        assert key == idempotency_key(run_key="k", node_id="a", step=1, index=0)
        assert key != idempotency_key(run_key="k", node_id="a", step=1, index=1)
