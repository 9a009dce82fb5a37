"""Run keys name a run; re-running the same key resumes it."""

from __future__ import annotations

import hashlib
import re
import uuid

from planner.errors import EmptyGoalError, UserInputError

__all__ = ["default_run_key", "fresh_run_key", "normalise_goal", "run_key_with_suffix"]

_MAX_GOAL_CHARS = 20_000


def normalise_goal(goal: str) -> str:
    """The goal as the planner sees it: stripped; raises `EmptyGoalError` if empty."""
    text = (goal or "").strip()
    if not text:
        raise EmptyGoalError()
    if len(text) > _MAX_GOAL_CHARS:
        raise UserInputError(
            f"the goal is {len(text):,} characters long, more than the {_MAX_GOAL_CHARS:,} allowed: "
            "put long material in a file and describe the goal briefly"
        )
    return text


def _slug(goal: str) -> str:
    words = re.findall(r"[a-z0-9]+", goal.lower())
    return "-".join(words)[:40].strip("-") or "goal"


def default_run_key(goal: str) -> str:
    """Derived from the goal, so running the same goal again resumes (or replays) it."""
    digest = hashlib.sha256(goal.encode("utf-8")).hexdigest()[:10]
    return f"{_slug(goal)}-{digest}"


def fresh_run_key(goal: str) -> str:
    """A new key for the same goal, for a fresh run instead of a resume."""
    return run_key_with_suffix(goal, uuid.uuid4().hex[:10])


def run_key_with_suffix(goal: str, suffix: str) -> str:
    """A readable key for `goal` made unique by `suffix` (a flow run id, say)."""
    return f"{_slug(goal)}-{suffix}"
