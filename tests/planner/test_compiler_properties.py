"""Property tests: whatever plan-shaped junk a model writes, `compile_plan` returns a valid
DAG or raises a `PlanError`, never anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from planner.compiler import compile_plan
from planner.errors import CycleError, EmptyPlanError, PlanError, PlanParseError, PlanTooLargeError
from planner.models import Plan

# A small id pool makes duplicates, self-loops and cycles likely; "t1".."t3" collide
# with generated ids on purpose. Ints, integral floats and None exercise coercion.
ID_POOL = ["a", "b", "c", "t1", "t2", "t3", "1", "2", " a "]
ids = st.one_of(
    st.sampled_from(ID_POOL),
    st.integers(min_value=-2, max_value=4),
    st.sampled_from([1.0, 2.0, 2.5]),
    st.none(),
    st.booleans(),
)
dep_ids = st.one_of(ids, st.sampled_from(["ghost", "zz", ""]))
descriptions = st.one_of(
    st.sampled_from(["Do A", "do a", "Do B", "", "   ", "Write   it up", "write it up"]),
    st.text(max_size=12),
    st.none(),
    st.integers(0, 3),
)
depends = st.one_of(
    st.lists(dep_ids, max_size=4),
    st.sampled_from(["1, 2", "a b", "a,t1", ""]),
    st.integers(0, 3),
    st.none(),
)


@st.composite
def task_items(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.text(max_size=8), st.integers(), st.none()))  # not an object
    item: dict[str, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        item["id"] = draw(ids)
    item[draw(st.sampled_from(["description", "description", "task", "name"]))] = draw(descriptions)
    if draw(st.booleans()):
        item[draw(st.sampled_from(["depends_on", "depends_on", "dependencies", "deps"]))] = draw(depends)
    return item


plans = st.lists(task_items(), max_size=9).flatmap(
    lambda tasks: st.sampled_from([{"tasks": tasks}, tasks, {"steps": tasks}])
)


def _assert_valid_dag(plan: Plan) -> None:
    ids_ = [t.id for t in plan.tasks]
    assert all(isinstance(i, str) and i.strip() == i and i for i in ids_)
    assert len(set(ids_)) == len(ids_), f"duplicate ids {ids_}"
    for task in plan.tasks:
        assert task.description.strip(), task
        assert len(set(task.depends_on)) == len(task.depends_on), task
        for dep in task.depends_on:
            assert dep in plan.by_id and dep != task.id, (task.id, dep)
    order = plan.graph.topological_order()
    position = {n: i for i, n in enumerate(order)}
    assert sorted(order) == sorted(ids_)
    for task in plan.tasks:
        assert all(position[d] < position[task.id] for d in task.depends_on)


def _assert_unrepairable(error: PlanError) -> None:
    """Lenient mode repairs self-loops, unknown deps and duplicate ids; only these remain."""
    assert isinstance(error, (PlanParseError, EmptyPlanError, PlanTooLargeError, CycleError)), repr(error)
    if isinstance(error, CycleError):
        assert error.cycle[0] == error.cycle[-1] == min(error.cycle)
        assert len(set(error.cycle)) == len(error.cycle) - 1 >= 2, f"not a real cycle: {error.cycle}"


def _compile(raw: Any, strict: bool) -> Any:
    try:
        return compile_plan(raw, strict=strict, max_tasks=8)
    except PlanError as exc:
        return exc


COMMON = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class TestCompilerTotality:
    @COMMON
    @given(plans, st.booleans())
    def test_valid_dag_or_plan_error(self, data: Any, as_text: bool) -> None:
        raw = json.dumps(data) if as_text else data
        for strict in (False, True):
            result = _compile(raw, strict)  # any other exception fails the test
            if isinstance(result, PlanError):
                if not strict:
                    _assert_unrepairable(result)
                continue
            _assert_valid_dag(result.plan)
            if strict:
                assert result.repairs == ()

    @settings(COMMON, max_examples=150)
    @given(plans)
    def test_strict_success_implies_lenient_gives_the_same_plan(self, data: Any) -> None:
        text = json.dumps(data)
        strict_result = _compile(text, True)
        if isinstance(strict_result, PlanError):
            return
        lenient_result = _compile(text, False)
        if len(strict_result.plan.tasks) > 8:
            return  # only the lenient task limit differs
        assert not isinstance(lenient_result, PlanError), lenient_result
        assert lenient_result.plan == strict_result.plan

    @settings(COMMON, max_examples=200)
    @given(
        st.lists(st.text(alphabet="abc12 ,[]{}\":", max_size=30), min_size=1, max_size=3).map("".join),
        st.booleans(),
    )
    def test_arbitrary_text(self, text: str, strict: bool) -> None:
        result = _compile(text, strict)
        if not isinstance(result, PlanError):
            _assert_valid_dag(result.plan)


class TestGeneratorIsNotVacuous:
    """The strategies must reach every outcome, or the properties above prove little."""

    @pytest.mark.parametrize(
        "outcome",
        [
            lambda d: not isinstance(_compile(json.dumps(d), True), PlanError),
            lambda d: not isinstance(r := _compile(json.dumps(d), False), PlanError) and len(r.repairs) >= 2,
            lambda d: isinstance(_compile(json.dumps(d), False), PlanError),
        ],
        ids=["strict-success", "lenient-success-with-repairs", "lenient-error"],
    )
    def test_reaches(self, outcome: Any) -> None:
        find(plans, outcome, settings=settings(max_examples=2000, database=None, deadline=None))
