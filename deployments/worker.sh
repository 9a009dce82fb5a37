#!/usr/bin/env bash
# Start a process worker in the foreground: it polls the pool and runs each flow run
# in a subprocess of its own. Start as many as you like, here or on other machines
# (same PREFECT_API_URL, same project path; see deployments/README.md).
# The flow runs inherit this environment: OPENAI_BASE_URL / OPENAI_API_KEY (none: the
# bundled model), PLANFLOW_DATABASE_URL (the ledger), PLANFLOW_* settings.
# Extra arguments go to `prefect worker start` (e.g. --name, --limit 4).
set -euo pipefail
source "$(dirname "$0")/_env.sh"
need_api_url
cd "$ROOT"
exec "$PREFECT" worker start --pool "$POOL" --type process "$@"
