#!/usr/bin/env bash
# Register every deployment in prefect.yaml (plan-and-execute/daily-brief and
# plan-and-execute/on-goal-submitted, with its event trigger). Re-run after editing
# prefect.yaml. Runs from the project directory: the worker will run flows from here.
set -euo pipefail
source "$(dirname "$0")/_env.sh"
need_api_url
cd "$ROOT"
"$PREFECT" --no-prompt deploy --all "$@"
