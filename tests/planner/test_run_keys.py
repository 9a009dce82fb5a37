"""`planner.run_keys`: keys derived from the goal, and goal validation."""

from __future__ import annotations

import re

import pytest

from planner.errors import EmptyGoalError, UserInputError
from planner.run_keys import default_run_key, fresh_run_key, normalise_goal


class TestDefaultRunKey:
    def test_deterministic(self) -> None:
        assert default_run_key("Plan a 3-day trip to Lisbon") == default_run_key("Plan a 3-day trip to Lisbon")

    def test_shape(self) -> None:
        key = default_run_key("Plan a 3-day trip to Lisbon!")
        assert re.fullmatch(r"plan-a-3-day-trip-to-lisbon-[0-9a-f]{10}", key), key

    @pytest.mark.parametrize("other", ["Plan a 4-day trip to Lisbon", "plan a 3-day trip to lisbon", "Plan a 3 day trip to Lisbon"])
    def test_differs_per_goal_even_with_the_same_slug(self, other: str) -> None:
        assert default_run_key(other) != default_run_key("Plan a 3-day trip to Lisbon")

    def test_slug_capped_and_fallback(self) -> None:
        assert len(default_run_key("word " * 100)) <= 40 + 1 + 10
        assert re.fullmatch(r"goal-[0-9a-f]{10}", default_run_key("¿¡!?"))

    def test_fresh_keys_differ_but_share_the_slug(self) -> None:
        a, b = fresh_run_key("Tides"), fresh_run_key("Tides")
        assert a != b and a.startswith("tides-") and b.startswith("tides-")


class TestNormaliseGoal:
    def test_strips(self) -> None:
        assert normalise_goal("  Explain tides \n") == "Explain tides"

    @pytest.mark.parametrize("goal", ["", "   ", "\n\t ", None])
    def test_empty(self, goal: str) -> None:
        with pytest.raises(EmptyGoalError) as info:
            normalise_goal(goal)
        assert "goal is empty" in str(info.value)

    def test_huge_goal_rejected_with_size(self) -> None:
        with pytest.raises(UserInputError) as info:
            normalise_goal("x" * 1_000_000)
        assert not isinstance(info.value, EmptyGoalError)
        assert "1,000,000 characters" in str(info.value) and "20,000" in str(info.value)

    def test_limit_is_inclusive(self) -> None:
        assert len(normalise_goal("x" * 20_000)) == 20_000
        with pytest.raises(UserInputError):
            normalise_goal("x" * 20_001)
