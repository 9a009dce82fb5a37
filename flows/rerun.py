"""Rerun from a node, in a flow run: the `rerun_from` / `rerun_description` parameters.

`planflow runs rerun KEY --from NODE` passes them, and so can a deployment run (the
UI's "Custom run"). The rerun is checked before the run is claimed (a bad request
leaves the run as it was), then recorded once as a new plan version; the nodes it
invalidates run again under new cache keys and the rest replay (planner/rerun.py).

Applied once per flow run: the version records the flow run that asked, so a retry
of that flow run (or a resume after a crash) continues the rerun instead of starting
another one, and a plain resume of the key later just resumes the latest version.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.runtime import flow_run as current_flow_run

from flows.runtime import RunResources
from planner.errors import RunInProgressError
from planner.ledger import Ledger, owner_is_alive
from planner.models import Plan
from planner.rerun import RerunError, plan_rerun, rerun_info, rerun_versions, who_asked

__all__ = ["RerunRequest", "apply_rerun", "check_rerun", "rerun_versions_of"]


@dataclass(frozen=True)
class RerunRequest:
    """Rerun `node` and everything downstream; with `description`, the node's text changes first."""

    node: str
    description: str | None = None

    @classmethod
    def from_parameters(cls, rerun_from: str | None, rerun_description: str | None) -> RerunRequest | None:
        if rerun_from is None:
            if rerun_description is not None:
                raise RerunError("rerun_description needs rerun_from: the task whose text it replaces")
            return None
        return cls(rerun_from, rerun_description)


def check_rerun(ledger: Ledger, run_key: str, request: RerunRequest) -> None:
    """Fail before the run is claimed: no such run, a run running now, or a node it cannot rerun."""
    run = ledger.run(run_key)
    if run is None:
        raise RerunError(f"no run {run_key!r} in the ledger to rerun (see: planflow runs list)")
    if run.status == "running" and owner_is_alive(run.owner, run.heartbeat_at):
        raise RunInProgressError(
            f"run {run_key!r} is running now (flow run {run.flow_run_id}): a rerun starts from a finished "
            "or failed run; wait for it to end, or cancel it, then rerun"
        )
    if _applied_by_this_flow_run(ledger, run_key) is None:
        plan_rerun(ledger.plan_versions(run_key), request.node, request.description, run_key=f"run {run_key!r}")


def _applied_by_this_flow_run(ledger: Ledger, run_key: str) -> int | None:
    """The version this flow run's rerun made earlier (it was retried, or crashed and resumed)."""
    flow_run_id = str(current_flow_run.id)
    for record in ledger.plan_versions(run_key):
        info = rerun_info(record)
        if info is not None and info.get("flow_run_id") == flow_run_id:
            return record.version
    return None


async def apply_rerun(resources: RunResources, request: RerunRequest) -> tuple[Plan, int]:
    """Record the rerun as a new plan version (once) and publish it; return that plan and version."""
    ledger, run_key = resources.ledger, resources.run_key
    versions = ledger.plan_versions(run_key)
    if (done := _applied_by_this_flow_run(ledger, run_key)) is not None:
        latest = versions[-1]
        get_run_logger().info("Rerun already recorded as plan v%d; continuing at v%d", done, latest.version)
        return Plan.model_validate_json(latest.plan_json), latest.version
    rerun = plan_rerun(versions, request.node, request.description, run_key=f"run {run_key!r}")
    version = versions[-1].version + 1
    requested_by = who_asked(_from_a_deployment())
    superseded = resources.artifacts.node_states()  # before the record resets the rerun nodes
    await resources.write(
        ledger.record_rerun, run_key, version, rerun.plan,
        node=rerun.node, nodes=rerun.nodes, requested_by=requested_by, flow_run_id=str(current_flow_run.id),
    )
    reason = f"rerun from {rerun.node} (asked by {requested_by})"
    await resources.artifacts.plan(rerun.plan, version, reason, superseded=superseded)
    get_run_logger().info(
        "Plan v%d: %s; running again: %s%s", version, reason, ", ".join(rerun.nodes),
        "; its task text changed" if rerun.description_changed else "",
    )
    return rerun.plan, version


def _from_a_deployment() -> bool:
    context = FlowRunContext.get()
    return context is not None and context.flow_run is not None and context.flow_run.deployment_id is not None


def rerun_versions_of(resources: RunResources) -> dict[str, int]:
    """Each rerun node's rerun version in this run (for its cache keys); others are absent (0)."""
    return rerun_versions(resources.ledger.plan_versions(resources.run_key))
