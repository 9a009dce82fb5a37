"""Submit a goal as a `planflow.goal.submitted` event: POST /api/events on the Prefect server.

    python deployments/submit_event.py "Plan a 3-day trip to Lisbon"
    python deployments/submit_event.py "Summarise the plan" --run-key lisbon-1 --plan plan.json

The `on-goal-submitted` deployment (prefect.yaml) has a trigger on this event: the
server's automation creates a flow run whose `goal`, `run_key` and `plan` are the
payload's, and a worker on the `planflow` pool runs it. Anything that can send an
HTTP request can submit a goal the same way; this script only uses the standard
library. It prints the event it sent (JSON) on stdout.

The API is $PREFECT_API_URL (or --api), e.g. http://127.0.0.1:4200/api. If the
server needs auth, set PREFECT_API_KEY (sent as a bearer token) or
PREFECT_API_AUTH_STRING (basic auth, "user:password").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

GOAL_SUBMITTED = "planflow.goal.submitted"
"""The event the on-goal-submitted deployment (and deployments/serve.py) react to."""


def goal_event(goal: str, run_key: str | None = None, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """The event for one goal. The resource id names the run (or the goal) for filtering."""
    slug = re.sub(r"[^a-z0-9]+", "-", (run_key or goal).lower()).strip("-")[:60] or "goal"
    payload: dict[str, Any] = {"goal": goal}
    if run_key:
        payload["run_key"] = run_key
    if plan is not None:
        payload["plan"] = plan
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(timezone.utc).isoformat(),
        "event": GOAL_SUBMITTED,
        "resource": {"prefect.resource.id": f"planflow.goal.{slug}", "prefect.resource.name": run_key or goal[:60]},
        "payload": payload,
    }


def post_events(api_url: str, events: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """POST the events to {api_url}/events; raises on an HTTP error."""
    request = urllib.request.Request(
        api_url.rstrip("/") + "/events",
        data=json.dumps(events).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if os.environ.get("PREFECT_API_KEY"):
        request.add_header("Authorization", f"Bearer {os.environ['PREFECT_API_KEY']}")
    elif os.environ.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Submit a goal to Planflow as a planflow.goal.submitted event.")
    parser.add_argument("goal", help="what you want done, in plain words")
    parser.add_argument("--run-key", metavar="KEY", help="name of the run (default: derived from the goal)")
    parser.add_argument("--plan", type=Path, metavar="FILE", help='a plan JSON {"tasks": [...]} to run instead of planning')
    parser.add_argument("--api", default=os.environ.get("PREFECT_API_URL"), help="Prefect API URL (default $PREFECT_API_URL)")
    args = parser.parse_args(argv)
    if not args.api:
        parser.error("no Prefect API URL: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) or pass --api")
    if not args.goal.strip():
        parser.error("the goal is empty")
    plan = None
    if args.plan is not None:
        try:
            plan = json.loads(args.plan.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read plan file {str(args.plan)!r}: {exc}")
    event = goal_event(args.goal.strip(), args.run_key, plan)
    try:
        post_events(args.api, [event])
    except urllib.error.HTTPError as exc:
        print(f"submit_event: the server refused the event: HTTP {exc.code} {exc.read()[:500]!r}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"submit_event: cannot reach {args.api}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(event, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
