"""Planflow's pure core: plan models, the dependency graph, the plan compiler,
prompts, the LLM client and the ledger. Nothing here imports Prefect."""

from planner.compiler import CompiledPlan, compile_plan
from planner.errors import (
    ConfigurationError,
    CycleError,
    DuplicateTaskIdError,
    EmptyGoalError,
    EmptyPlanError,
    LLMError,
    PermanentLLMError,
    PlanError,
    PlanflowError,
    PlanParseError,
    PlanTooLargeError,
    ReplanRejectedError,
    RunFailedError,
    RunInProgressError,
    SelfLoopError,
    TransientLLMError,
    UnknownDependencyError,
    UserInputError,
)
from planner.graph import DependencyGraph, find_cycle
from planner.models import NodeOutcome, Plan, Repair, Task
from planner.settings import PlanflowSettings

__all__ = [
    "CompiledPlan",
    "ConfigurationError",
    "CycleError",
    "DependencyGraph",
    "DuplicateTaskIdError",
    "EmptyGoalError",
    "EmptyPlanError",
    "LLMError",
    "NodeOutcome",
    "PermanentLLMError",
    "Plan",
    "PlanError",
    "PlanParseError",
    "PlanTooLargeError",
    "PlanflowError",
    "PlanflowSettings",
    "Repair",
    "ReplanRejectedError",
    "RunFailedError",
    "RunInProgressError",
    "SelfLoopError",
    "Task",
    "TransientLLMError",
    "UnknownDependencyError",
    "UserInputError",
    "compile_plan",
    "find_cycle",
]
