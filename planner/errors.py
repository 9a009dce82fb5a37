"""Planflow's error tree.

Every error the library raises on purpose derives from `PlanflowError`, and each
also inherits the builtin it is closest to, so callers can catch either::

    PlanflowError
    ├── UserInputError (ValueError)          bad input from a person: exit code 2
    │   ├── EmptyGoalError
    │   └── PlanError                         a plan that is not a valid DAG
    │       ├── PlanParseError                not JSON, or not a plan
    │       ├── EmptyPlanError
    │       ├── PlanTooLargeError
    │       ├── DuplicateTaskIdError
    │       ├── SelfLoopError
    │       ├── UnknownDependencyError
    │       └── CycleError
    ├── ConfigurationError (ValueError)       a setting that cannot work: exit code 2
    ├── LLMError (RuntimeError)
    │   ├── TransientLLMError                 429, 5xx, timeout, connection reset: retried
    │   └── PermanentLLMError                 other 4xx, refusal, unusable output: not retried
    ├── TaskFailedError (RuntimeError)        the task's own work failed: a replan may fix it
    │   ├── StepBudgetError                   the ReAct loop spent its steps without answering
    │   ├── RepeatedToolCallError             the model repeated a call that gave nothing new
    │   └── ToolOutcomeUnknownError           a side-effecting call started, then the process died
    ├── RunFailedError (RuntimeError)         a node failed for good: exit code 1
    │   └── ReplanRejectedError               the replanner's answer could not be used
    └── RunInProgressError (RuntimeError)     the run key is being executed elsewhere: exit code 1

Messages name the offending value and, where there is one, the fix. They never
contain secrets: `planner.llm` redacts API keys before building any of these.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigurationError",
    "CycleError",
    "DuplicateTaskIdError",
    "EmptyGoalError",
    "EmptyPlanError",
    "LLMError",
    "PermanentLLMError",
    "PlanError",
    "PlanParseError",
    "PlanTooLargeError",
    "PlanflowError",
    "ReplanRejectedError",
    "RunFailedError",
    "RunInProgressError",
    "RepeatedToolCallError",
    "SelfLoopError",
    "StepBudgetError",
    "TaskFailedError",
    "ToolOutcomeUnknownError",
    "TransientLLMError",
    "UnknownDependencyError",
    "UserInputError",
]


def _show_id(task_id: str) -> str:
    """An id as it reads in a one-line message: bare if plain, quoted if it has spaces or arrows."""
    return task_id if task_id and all(c.isalnum() or c in "._-" for c in task_id) else repr(task_id)


class PlanflowError(Exception):
    """Base of every error Planflow raises on purpose."""


class UserInputError(PlanflowError, ValueError):
    """The input a person gave cannot be used; nothing ran because of it."""


class EmptyGoalError(UserInputError):
    """The goal is empty or only whitespace."""

    def __init__(self) -> None:
        super().__init__("the goal is empty: pass a goal such as 'Plan a 3-day trip to Lisbon'")

    def __reduce__(self):
        return (type(self), ())


class PlanError(UserInputError):
    """A plan (from a model or a file) is not a valid task DAG."""


class PlanParseError(PlanError):
    """The text holds no JSON, or the JSON is not a list of tasks."""


class EmptyPlanError(PlanError):
    """The plan has no tasks."""

    def __init__(self) -> None:
        super().__init__("the plan has no tasks")

    def __reduce__(self):
        return (type(self), ())


class PlanTooLargeError(PlanError):
    """The plan has more tasks than the limit allows."""

    def __init__(self, count: int, limit: int) -> None:
        self.count, self.limit = count, limit
        super().__init__(f"the plan has {count} tasks, more than the limit of {limit}")

    def __reduce__(self):  # keep it picklable: Prefect persists failed states
        return (type(self), (self.count, self.limit))


class DuplicateTaskIdError(PlanError):
    """Two tasks share one id."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"duplicate task id {task_id!r}: every task needs its own id")

    def __reduce__(self):
        return (type(self), (self.task_id,))


class SelfLoopError(PlanError):
    """A task lists itself in `depends_on`."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} depends on itself")

    def __reduce__(self):
        return (type(self), (self.task_id,))


class UnknownDependencyError(PlanError):
    """A task depends on an id that no task has."""

    def __init__(self, task_id: str, missing: str) -> None:
        self.task_id, self.missing = task_id, missing
        super().__init__(f"task {task_id!r} depends on unknown task id {missing!r}")

    def __reduce__(self):
        return (type(self), (self.task_id, self.missing))


class CycleError(PlanError):
    """The dependencies form a cycle; `cycle` lists it with the first id repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(f"the plan has a dependency cycle: {' -> '.join(map(_show_id, self.cycle))}")

    def __reduce__(self):
        return (type(self), (self.cycle,))


class ConfigurationError(PlanflowError, ValueError):
    """A setting or option cannot work (for example a negative retry count)."""


class LLMError(PlanflowError, RuntimeError):
    """A call to the language model did not give a usable answer."""


class TransientLLMError(LLMError):
    """Worth retrying: rate limits, server errors, timeouts, dropped connections.

    `retry_after` is the server's `Retry-After` in seconds, already capped, if it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.retry_after))


class PermanentLLMError(LLMError):
    """Retrying the same request cannot help: bad request, refusal, unusable output."""


class TaskFailedError(PlanflowError, RuntimeError):
    """A node's own work failed (not its model call, not the machinery): replanning may help."""


class StepBudgetError(TaskFailedError):
    """A node's ReAct loop used every step it was allowed without giving an answer."""


class RepeatedToolCallError(TaskFailedError):
    """The model asked for a call it had already made, with the same arguments, and got nothing new."""


class ToolOutcomeUnknownError(TaskFailedError):
    """A call to a tool that is not safe to repeat started and never ended (the process died).

    It may or may not have taken effect, so it is not run again; the replanner or a
    person decides what to do.
    """


class RunFailedError(PlanflowError, RuntimeError):
    """A run ended without an answer because a node failed for good."""

    def __init__(self, message: str, node_id: str | None = None) -> None:
        self.node_id = node_id
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.node_id))


class ReplanRejectedError(RunFailedError):
    """The replanner's answer (asked twice) could not be turned into a valid plan."""


class RunInProgressError(PlanflowError, RuntimeError):
    """Another live process is executing this run key; running it twice would pay twice."""
