"""What a run shows in the Prefect UI: the plan (Mermaid graph and table) for every
version, live progress, the repair log, and the final results and answer.

Each plan version is published twice under its key: when it is made (for a later
version: what failed before it, the action and the diff) and, when a replan
supersedes it or the run ends, in its final state (failed, skipped and replaced
nodes coloured). Each card's description says which it is.

Artifacts are for people; a failure to publish one is logged and never fails
the run. Keys are derived from the run key, so each run's artifacts are found
under the same names (and each publication is a new version of that key).
"""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from planner.ledger import Ledger, NodeRecord, PlanVersionRecord
from planner.models import Plan, Repair
from planner.plan_diff import final_statuses, plan_diff
from planner.render import change_markdown, plan_markdown, repairs_markdown
from planner.rerun import rerun_info
from planner.report import current_tool_calls, report_status

__all__ = ["PROGRESS_INTERVAL", "RunArtifacts", "artifact_key"]

PROGRESS_INTERVAL = 1.0
"""Seconds between progress artifact updates."""


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def artifact_key(kind: str, run_key: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_key.lower()).strip("-")
    return f"{kind}-{slug}"[:100].rstrip("-")


class RunArtifacts:
    """Publishes one run's artifacts; every method swallows (and logs) its own errors."""

    def __init__(self, run_key: str, ledger: Ledger) -> None:
        self.run_key = run_key
        self.ledger = ledger
        self._progress_id: UUID | None = None
        self._progress_at = 0.0

    def _statuses(self) -> dict[str, str]:
        return {n.node_id: n.status for n in self.ledger.nodes(self.run_key)}

    def node_states(self) -> dict[str, NodeRecord]:
        """The ledger's nodes now: taken before a new version's write resets the unfinished ones."""
        return {n.node_id: n for n in self.ledger.nodes(self.run_key)}

    async def _safely(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:  # the UI is a view; the run goes on without it
            get_run_logger().warning("Could not publish the %s artifact: %s", what, exc)
            return None

    def _versions(self) -> dict[int, PlanVersionRecord]:
        return {v.version: v for v in self.ledger.plan_versions(self.run_key)}

    def _why(
        self, version: int, plan: Plan, nodes: dict[str, NodeRecord], versions: dict[int, PlanVersionRecord]
    ) -> str | None:
        """The change section of a later version: what failed before it, the action, the diff."""
        record = versions.get(version)
        earlier = [v for v in versions if v < version]
        if record is None or not earlier:
            return None
        previous = Plan.model_validate_json(versions[max(earlier)].plan_json)
        failed = record.failed_node
        rerun = ""
        if (info := rerun_info(record)) is not None:
            again = ", ".join(f"`{n}`" for n in info["nodes"])
            rerun = (
                f"**Rerun from `{info['from']}`**, asked by {record.requested_by or 'someone'}: "
                f"{again} run again; every other task is replayed.\n\n"
            )
        return rerun + change_markdown(
            max(earlier),
            plan_diff(previous, plan, failed=failed, action=record.action),
            action=record.action,
            failed=failed,
            error=nodes[failed].error if failed in nodes else None,
        )

    async def plan(
        self,
        plan: Plan,
        version: int,
        reason: str | None,
        repairs: tuple[Repair, ...] = (),
        *,
        superseded: dict[str, NodeRecord] | None = None,
    ) -> None:
        """Publish a new plan version (recorded in the ledger first), and the final state
        of the version it supersedes from `superseded`, the nodes before the record."""
        versions = self._versions()
        nodes = superseded if superseded is not None else self.node_states()
        earlier = [v for v in versions if v < version]
        if earlier:
            before = versions[max(earlier)]
            await self._final_state(
                Plan.model_validate_json(before.plan_json), before.version, nodes, versions,
                f"superseded by v{version}", successor=plan,
            )
        record = versions.get(version)
        what = reason or "plan"
        if record is not None and record.failed_node:
            what = f"{record.action or 'new version'} after {record.failed_node} failed"
        await self._safely(
            "plan",
            acreate_markdown_artifact(
                markdown=plan_markdown(
                    plan, version, self._statuses(), reason, sections=[self._why(version, plan, nodes, versions) or ""]
                ),
                key=artifact_key(f"plan-v{version}", self.run_key),
                description=f"Plan v{version} of {self.run_key}: {_short(what)}",
            ),
        )
        if repairs:
            await self._safely(
                "repairs",
                acreate_markdown_artifact(
                    markdown=repairs_markdown(repairs, version),
                    key=artifact_key(f"repairs-v{version}", self.run_key),
                    description=f"What the compiler repaired in plan v{version}",
                ),
            )

    async def _final_state(
        self,
        plan: Plan,
        version: int,
        nodes: dict[str, NodeRecord],
        versions: dict[int, PlanVersionRecord],
        ending: str,
        successor: Plan | None = None,
    ) -> None:
        """The version again, as it ended: every node completed, cached, failed, skipped or replaced."""
        statuses = final_statuses(plan, {k: n.status for k, n in nodes.items()}, successor)
        record = versions.get(version)
        await self._safely(
            "plan",
            acreate_markdown_artifact(
                markdown=plan_markdown(
                    plan, version, statuses, record.reason if record else None,
                    title=f"Plan v{version}: final state ({ending})",
                    sections=[self._why(version, plan, nodes, versions) or ""],
                ),
                key=artifact_key(f"plan-v{version}", self.run_key),
                description=f"Plan v{version} of {self.run_key}: final state ({ending})",
            ),
        )

    async def progress(self, done: int, total: int) -> None:
        """Update the progress bar; at most once a second (each update is an API call), but always at 100%."""
        now = time.monotonic()
        if self._progress_id is not None and done < total and now - self._progress_at < PROGRESS_INTERVAL:
            return
        self._progress_at = now
        percent = 100.0 * done / total if total else 100.0
        if self._progress_id is None:
            self._progress_id = await self._safely(
                "progress",
                acreate_progress_artifact(
                    progress=percent,
                    key=artifact_key("progress", self.run_key),
                    description=f"Tasks finished in {self.run_key}",
                ),
            )
        else:
            await self._safely("progress", aupdate_progress_artifact(self._progress_id, percent))

    async def results(
        self, plan: Plan, version: int, answer: str | None, error: str | None = None, *, cancelled: bool = False
    ) -> None:
        rows = []
        tool_calls = {node: len(calls) for node, calls in current_tool_calls(self.ledger, self.run_key).items()}
        for node in self.ledger.nodes(self.run_key):
            duration = (
                round((node.finished_at - node.started_at).total_seconds(), 2)
                if node.finished_at and node.started_at
                else None
            )
            rows.append(
                {
                    "node": node.node_id,
                    "task": node.description[:80],
                    "status": report_status(node.status),
                    "attempts": node.attempts,
                    "cached": node.cached,
                    "tokens": node.prompt_tokens + node.completion_tokens,
                    "tool calls": tool_calls.get(node.node_id, 0),
                    "duration_s": duration,
                }
            )
        await self._safely(
            "results",
            acreate_table_artifact(
                table=rows,
                key=artifact_key("results", self.run_key),
                description=f"Every task of {self.run_key}",
            ),
        )
        ending = "the run completed" if answer is not None else "the run was cancelled" if cancelled else "the run failed"
        await self._final_state(plan, version, self.node_states(), self._versions(), ending)
        if answer is not None:
            body = f"## Answer\n\n{answer}"
        else:
            body = f"## Run {'cancelled' if cancelled else 'failed'}\n\n{error}"
        await self._safely(
            "answer",
            acreate_markdown_artifact(
                markdown=body, key=artifact_key("answer", self.run_key), description=f"Outcome of {self.run_key}"
            ),
        )

