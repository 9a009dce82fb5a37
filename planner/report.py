"""The run report (`--report FILE`): built from the ledger alone, so it is the same
whether the run just finished here, crashed and resumed, or ran on a worker.

Each task lists its tool calls (`tool_calls`, of its latest run: a rerun's, once a
person reran it) and its model turns (`steps`); `decisions` lists each pause for a
person and what they decided (who, what, when). Tool
call rows are redacted (the API key) when they are written, and results are cut
to `TOOL_RESULT_CHARS` here, so the report holds no secret the ledger does not.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from planner.ledger import DecisionRecord, Ledger, NodeRecord, ToolCallRecord
from planner.rerun import rerun_info, rerun_versions

__all__ = [
    "REPORT_RUN_STATUSES",
    "REPORT_TASK_STATUSES",
    "TOOL_RESULT_CHARS",
    "build_report",
    "current_tool_calls",
    "decision_entry",
    "node_steps",
    "report_status",
    "tool_call_entry",
]

REPORT_TASK_STATUSES = ("completed", "failed", "skipped", "cached", "cancelled")

REPORT_RUN_STATUSES = ("completed", "failed", "cancelled")
"""A run the report shows in any other state (running, crashed) did not end well: failed."""

TOOL_RESULT_CHARS = 2000
"""Characters of a tool call's result (and error) kept in the report."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def report_status(node_status: str) -> str:
    """A node's status as the report (and the results table) shows it."""
    # Nodes that never started when the run ended (pending or interrupted) were skipped.
    return node_status if node_status in REPORT_TASK_STATUSES else "skipped"


def _cap(text: str | None, limit: int = TOOL_RESULT_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}[... {len(text) - limit} more characters cut]"


def tool_call_entry(call: ToolCallRecord) -> dict[str, Any]:
    """One tool call as the report shows it."""
    return {
        "step": call.step,
        "index": call.call_index,
        "tool": call.tool,
        "arguments": call.arguments,
        "idempotent": call.idempotent,
        "result": _cap(call.result),
        "error": _cap(call.error),
        "started_at": _iso(call.started_at),
        "finished_at": _iso(call.finished_at),
        "cached": call.cached,
    }


def decision_entry(decision: DecisionRecord) -> dict[str, Any]:
    """One pause as the report shows it: what it waited for, and who decided what, when
    (`action` and `decided_at` are null while it still waits)."""
    return {
        "kind": decision.kind,
        "plan_version": decision.plan_version,
        "node": decision.node_id,
        "question": decision.question,
        "asked_at": _iso(decision.asked_at),
        "action": decision.action,
        "detail": decision.detail,
        "decided_by": decision.decided_by,
        "decided_at": _iso(decision.decided_at),
    }


def node_steps(node: NodeRecord, calls: list[ToolCallRecord]) -> int:
    """Model turns the node took: a finished node answered in the turn after its last tool
    call (one turn if it made none); an unfinished one got as far as its last call."""
    last = max((c.step for c in calls), default=0)
    if node.status in ("completed", "cached"):
        return last + 1
    return last or (1 if node.attempts else 0)


def current_tool_calls(ledger: Ledger, run_key: str) -> dict[str, list[ToolCallRecord]]:
    """Each node's tool calls of its latest run: a rerun node's earlier calls stay in the ledger, not here."""
    reruns = rerun_versions(ledger.plan_versions(run_key))
    calls: dict[str, list[ToolCallRecord]] = defaultdict(list)
    for call in ledger.tool_calls(run_key):
        if (call.rerun_version or 0) == reruns.get(call.node_id, 0):
            calls[call.node_id].append(call)
    return calls


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
            "requested_by": v.requested_by,
            "rerun": rerun_info(v),
        }
        for v in ledger.plan_versions(run_key)
    ]
    calls_by_node = current_tool_calls(ledger, run_key)
    tasks = [
        {
            "id": n.node_id,
            "description": n.description,
            "depends_on": json.loads(n.depends_on_json),
            "plan_version": n.plan_version,
            "status": report_status(n.status),
            "attempts": n.attempts,
            "cached": n.cached,
            "started_at": _iso(n.started_at),
            "finished_at": _iso(n.finished_at),
            "prompt_tokens": n.prompt_tokens,
            "completion_tokens": n.completion_tokens,
            "result": n.result,
            "error": n.error,
            "steps": node_steps(n, calls_by_node[n.node_id]),
            "tool_calls": [tool_call_entry(c) for c in calls_by_node[n.node_id]],
        }
        for n in ledger.nodes(run_key)
    ]
    return {
        "run_key": run.run_key,
        "goal": run.goal,
        "flow_run_id": run.flow_run_id,
        "status": run.status if run.status in REPORT_RUN_STATUSES else "failed",
        "cancelled_by": run.cancelled_by if run.status == "cancelled" else None,
        "cancelled_at": _iso(run.cancelled_at) if run.status == "cancelled" else None,
        "model": run.model,
        "answer": run.answer,
        "error": run.error,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "plan_versions": versions,
        "tasks": tasks,
        "decisions": [decision_entry(d) for d in ledger.decisions(run_key)],
        "llm": ledger.llm_totals(run_key),
    }
