#!/usr/bin/env bash
# Everything from nothing, on this machine: a local Prefect server (unless
# PREFECT_API_URL already points at one), the process work pool, the zombie-run
# automation (deployments/zombies.yaml), all deployments of prefect.yaml, and one
# worker in the background. Stop it all with deployments/down.sh.
#
#   deployments/up.sh
#   export PREFECT_API_URL=http://127.0.0.1:4200/api      # as printed
#   deployments/submit_run.sh "Plan a 3-day trip to Lisbon" lisbon
#   python deployments/submit_event.py "Plan a 3-day trip to Porto" --run-key porto
#
# The worker's flow runs use OPENAI_BASE_URL / OPENAI_API_KEY if set in this shell,
# else the bundled model. Its log: .prefect/worker.log.
set -euo pipefail
source "$(dirname "$0")/_env.sh"
STATE="$ROOT/.prefect"
mkdir -p "$STATE"

if [ -z "${PREFECT_API_URL:-}" ]; then
  PREFECT_API_URL="$("$ROOT/scripts/prefect_server.sh" start)"
  export PREFECT_API_URL
fi
echo "up: Prefect API $PREFECT_API_URL" >&2

"$ROOT/deployments/create_pool.sh"
"$ROOT/deployments/zombies.sh"
"$ROOT/deployments/deploy.sh" >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log" >&2; exit 1; }
echo "up: deployed plan-and-execute/daily-brief and plan-and-execute/on-goal-submitted" >&2

if [ -f "$STATE/worker.pid" ] && kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null; then
  echo "up: worker already running (pid $(cat "$STATE/worker.pid"))" >&2
else
  setsid "$ROOT/deployments/worker.sh" --name "planflow-$(hostname)-$$" </dev/null >"$STATE/worker.log" 2>&1 &
  echo $! >"$STATE/worker.pid"
  echo "up: worker started (pid $!, log $STATE/worker.log)" >&2
fi
echo "export PREFECT_API_URL=$PREFECT_API_URL"
