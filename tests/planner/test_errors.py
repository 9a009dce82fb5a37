"""`planner.errors`: the hierarchy callers catch on, and pickling (Prefect persists failures)."""

from __future__ import annotations

import pickle

import pytest

from planner import errors as E


class TestHierarchy:
    @pytest.mark.parametrize(
        ("cls", "bases"),
        [
            (E.EmptyGoalError, (E.UserInputError, ValueError)),
            (E.PlanParseError, (E.PlanError, E.UserInputError, ValueError)),
            (E.CycleError, (E.PlanError, ValueError)),
            (E.ConfigurationError, (E.PlanflowError, ValueError)),
            (E.TransientLLMError, (E.LLMError, RuntimeError)),
            (E.PermanentLLMError, (E.LLMError, RuntimeError)),
            (E.RunFailedError, (E.PlanflowError, RuntimeError)),
        ],
    )
    def test_bases(self, cls: type, bases: tuple[type, ...]) -> None:
        for base in bases:
            assert issubclass(cls, base)
        assert issubclass(cls, E.PlanflowError)

    def test_llm_errors_are_not_user_input(self) -> None:
        assert not issubclass(E.TransientLLMError, E.UserInputError)
        assert not issubclass(E.PlanError, E.LLMError)


class TestPickling:
    @pytest.mark.parametrize(
        "error",
        [
            E.PlanTooLargeError(13, 12),
            E.DuplicateTaskIdError("t1"),
            E.SelfLoopError("t2"),
            E.UnknownDependencyError("t3", "ghost"),
            E.CycleError(["a", "b", "a"]),
            E.TransientLLMError("HTTP 429 from the model", 2.5),
            E.RunFailedError("node t4 failed", "t4"),
            E.EmptyPlanError(),
            E.EmptyGoalError(),
            E.PlanParseError("no JSON"),
        ],
        ids=lambda e: type(e).__name__ if isinstance(e, Exception) else None,
    )
    def test_round_trip_keeps_type_message_and_fields(self, error: Exception) -> None:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)

    def test_messages_name_values(self) -> None:
        assert str(E.PlanTooLargeError(13, 12)) == "the plan has 13 tasks, more than the limit of 12"
        assert str(E.CycleError(["a", "b", "a"])) == "the plan has a dependency cycle: a -> b -> a"
        assert E.TransientLLMError("x", 2.5).retry_after == 2.5
