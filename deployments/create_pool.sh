#!/usr/bin/env bash
# Create the `process` work pool the deployments in prefect.yaml use (default name
# planflow; PLANFLOW_WORK_POOL overrides). Does nothing if it already exists.
set -euo pipefail
source "$(dirname "$0")/_env.sh"
need_api_url
if out="$("$PREFECT" work-pool create "$POOL" --type process 2>&1)"; then
  echo "create_pool: created process work pool '$POOL'" >&2
elif grep -q "already exists" <<<"$out"; then
  echo "create_pool: work pool '$POOL' already exists" >&2
else
  echo "$out" >&2
  exit 1
fi
