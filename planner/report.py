"""The run report (`--report FILE`): built from the ledger alone, so it is the same
whether the run just finished here, crashed and resumed, or ran on a worker."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from planner.ledger import Ledger

__all__ = ["REPORT_TASK_STATUSES", "build_report"]

REPORT_TASK_STATUSES = ("completed", "failed", "skipped", "cached")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _report_status(node_status: str) -> str:
    # Nodes that never started when the run ended (pending or interrupted) were skipped.
    return node_status if node_status in REPORT_TASK_STATUSES else "skipped"


def build_report(ledger: Ledger, run_key: str) -> dict[str, Any]:
    run = ledger.run(run_key)
    if run is None:
        raise KeyError(run_key)
    versions = [
        {
            "version": v.version,
            "reason": v.reason,
            "action": v.action,
            "failed_node": v.failed_node,
            "tasks": json.loads(v.plan_json)["tasks"],
            "repairs": json.loads(v.repairs_json),
        }
        for v in ledger.plan_versions(run_key)
    ]
    tasks = [
        {
            "id": n.node_id,
            "description": n.description,
            "depends_on": json.loads(n.depends_on_json),
            "plan_version": n.plan_version,
            "status": _report_status(n.status),
            "attempts": n.attempts,
            "cached": n.cached,
            "started_at": _iso(n.started_at),
            "finished_at": _iso(n.finished_at),
            "prompt_tokens": n.prompt_tokens,
            "completion_tokens": n.completion_tokens,
            "result": n.result,
            "error": n.error,
        }
        for n in ledger.nodes(run_key)
    ]
    return {
        "run_key": run.run_key,
        "goal": run.goal,
        "flow_run_id": run.flow_run_id,
        "status": "completed" if run.status == "completed" else "failed",
        "model": run.model,
        "answer": run.answer,
        "error": run.error,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "plan_versions": versions,
        "tasks": tasks,
        "llm": ledger.llm_totals(run_key),
    }
