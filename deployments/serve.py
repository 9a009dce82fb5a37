"""Serve plan-and-execute without a work pool or a worker (`flow.serve`-style).

    python deployments/serve.py                       # deployment plan-and-execute/serve
    python deployments/serve.py --cron "0 7 * * *" --goal "Write the morning briefing"
    python deployments/serve.py --no-event-trigger --limit 2

This one process registers a deployment, then polls the server and runs each of its
flow runs in a subprocess until you stop it (Ctrl-C). It reacts to
`planflow.goal.submitted` events (like the on-goal-submitted deployment of
prefect.yaml) unless --no-event-trigger, runs on --cron if given, and takes runs
from `prefect deployment run plan-and-execute/serve -p goal=...`.

Do not serve the event trigger and run a worker for prefect.yaml's on-goal-submitted
deployment against the same server at once: each event would start two runs of the
same run key (the second one is refused while the first is running).

Needs PREFECT_API_URL (a server); flow runs inherit this process's environment
(OPENAI_*, PLANFLOW_*), and with no endpoint set they use the bundled model.

How: `prefect.serve(plan_and_execute.to_deployment(...))`, which is what
`plan_and_execute.serve(...)` does except for one thing: each run re-imports the flow
from its entrypoint (flows/plan_and_execute.py) in a fresh `python -m prefect.engine`
process, exactly as a worker does, instead of unpickling the flow object this process
imported. So an edit to the code takes effect at the next run without a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

GOAL_SUBMITTED = "planflow.goal.submitted"

TRIGGER_PARAMETERS: dict[str, str] = {
    "goal": "{{ event.payload.goal }}",
    "run_key": "{{ event.payload.run_key | default(none) }}",
    "plan": "{{ event.payload.plan | default(none) }}",
}
"""The event payload's fields that become parameters: the same as prefect.yaml's trigger."""

HEARTBEAT_SECONDS = "30"
"""PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the runs, unless set: the same as prefect.yaml's."""

TAGS = ["planflow", "serve"]
"""Tags of the deployment and its runs; `planflow` puts them under deployments/zombies.yaml."""


def goal_submitted_trigger() -> Any:
    """A trigger that runs the deployment once per planflow.goal.submitted event."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="planflow-goal-submitted",
        description="Run plan-and-execute for each submitted goal.",
        enabled=True,
        match={"prefect.resource.id": "planflow.*"},
        expect={GOAL_SUBMITTED},
        posture="Reactive",
        threshold=1,
        within=0,
        parameters=dict(TRIGGER_PARAMETERS),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve the plan-and-execute flow (no work pool, no worker).")
    parser.add_argument("--name", default="serve", help="deployment name (default: serve)")
    parser.add_argument("--cron", help='also run on this cron schedule, e.g. "0 7 * * *" (UTC)')
    parser.add_argument("--goal", help="default goal of the deployment's runs (needed for --cron)")
    parser.add_argument("--no-event-trigger", action="store_true", help=f"do not react to {GOAL_SUBMITTED} events")
    parser.add_argument("--limit", type=int, default=4, help="most flow runs at once (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cron and not args.goal:
        build_parser().error("--cron needs --goal (a scheduled run has no one to ask for it)")

    os.chdir(ROOT)  # the deployment's entrypoint is flows/plan_and_execute.py, relative to here
    # Before Prefect reads its settings: runs beat as often as prefect.yaml's do, which
    # deployments/zombies.yaml relies on (Prefect's default, 180 s, would look dead).
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", HEARTBEAT_SECONDS)
    from prefect import serve

    from flows.plan_and_execute import plan_and_execute

    deployment = plan_and_execute.to_deployment(
        name=args.name,
        cron=args.cron,
        triggers=None if args.no_event_trigger else [goal_submitted_trigger()],
        parameters={"goal": args.goal} if args.goal else None,
        tags=TAGS,
        description="plan-and-execute served by deployments/serve.py",
    )
    serve(deployment, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
