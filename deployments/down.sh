#!/usr/bin/env bash
# Stop what deployments/up.sh started: the worker and the flow runs it is running, then
# the local Prefect server (only if scripts/prefect_server.sh started it). Deployments
# stay registered. A run stopped here is resumed by submitting its run key again.
set -euo pipefail
source "$(dirname "$0")/_env.sh"
STATE="$ROOT/.prefect"

descendants() {  # every live descendant of a pid
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

if [ -f "$STATE/worker.pid" ]; then
  pid="$(cat "$STATE/worker.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    # Flow runs run in sessions of their own: note them before the worker goes.
    runs="$(descendants "$pid" | tr '\n' ' ')"
    # A worker ignores its first SIGTERM (it finishes submitting); the second stops it.
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 1
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    if [ -n "${runs// /}" ]; then
      kill -TERM $runs 2>/dev/null || true
      sleep 2
      kill -KILL $runs 2>/dev/null || true
    fi
    echo "down: worker stopped (pid $pid)" >&2
  fi
  rm -f "$STATE/worker.pid"
fi
"$ROOT/scripts/prefect_server.sh" stop
