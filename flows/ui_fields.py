"""What a task run's page in the Prefect UI shows under "Cache Key" and "Retry Delay".

Prefect 3 keys a persisted result through the task's cache policy (a transaction
key in the result store) and never fills the task run's own `cache_key` field, so
both UIs say "Cache Key None" while the result is stored under our key. Its
"Retry Delay" is formatted as one number: our backoff is a list of delays (what
the engine reads, from the task itself), which the classic page shows as "NaNs"
and the V2 page as "None".

The engine sends the task run's fields with every state event and the server keeps
the latest, so setting them on the run before its final state is enough: the cache
key the moment it is computed, and, for Retry Delay, the first delay (the later ones
double it, each with "Retry Jitter Factor"; each retry's real wait is in the task
run's log: "Retry 1/3 will start 1.2 second(s) from now"). Retries themselves are
unchanged: the engine takes its delays from the task, not from these fields.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

__all__ = ["shown_in_ui"]

KeyFn = Callable[[Any, dict[str, Any]], str]


def shown_in_ui(key_fn: KeyFn) -> KeyFn:
    """`key_fn`, as a `cache_key_fn` whose key (and first retry delay) the task run's page shows."""

    @wraps(key_fn)
    def key(context: Any, parameters: dict[str, Any]) -> str:
        value = key_fn(context, parameters)
        task_run = getattr(context, "task_run", None)
        if task_run is not None:
            task_run.cache_key = value
            policy = task_run.empirical_policy
            if isinstance(policy.retry_delay, list):  # a number shows as is; a list cannot
                policy.retry_delay = policy.retry_delay[0] if policy.retry_delay else None
        return value

    return key
