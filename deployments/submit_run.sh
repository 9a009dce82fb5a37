#!/usr/bin/env bash
# Submit a goal as a flow run of a deployment and print the run's id and URL.
#
#   deployments/submit_run.sh "Plan a 3-day trip to Lisbon" [RUN_KEY] [-- extra args]
#
# Extra args go to `prefect deployment run`, e.g. -- --watch, or
# -- -p plan='{"tasks": [...]}' -p max_parallel=2.
# PLANFLOW_DEPLOYMENT picks the deployment (default plan-and-execute/on-goal-submitted).
set -euo pipefail
source "$(dirname "$0")/_env.sh"
need_api_url
[ $# -ge 1 ] && [ -n "$1" ] || { echo "usage: $0 GOAL [RUN_KEY] [-- prefect deployment run args]" >&2; exit 2; }
goal="$1"; shift
args=(-p "goal=$goal")
if [ $# -ge 1 ] && [ "$1" != "--" ]; then args+=(-p "run_key=$1"); shift; fi
[ "${1:-}" = "--" ] && shift
exec "$PREFECT" deployment run "${PLANFLOW_DEPLOYMENT:-plan-and-execute/on-goal-submitted}" "${args[@]}" "$@"
