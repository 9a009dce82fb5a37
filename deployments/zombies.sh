#!/usr/bin/env bash
# Install the automation of deployments/zombies.yaml on the server: a planflow
# deployment run whose heartbeats stop (its process died with no worker left to
# report it) is marked Crashed. Replaces an automation of the same name, so running
# it again is harmless (an open detection window starts again).
#
#   deployments/zombies.sh                          # within 90 s of the last heartbeat
#   PLANFLOW_ZOMBIE_AFTER=45 deployments/zombies.sh  # another window, in seconds
#
# Keep the window well above the runs' heartbeat interval (30 s, prefect.yaml).
set -euo pipefail
source "$(dirname "$0")/_env.sh"
need_api_url
FILE="$ROOT/deployments/zombies.yaml"
NAME="$(sed -n 's/^name: *//p' "$FILE")"

if [ -n "${PLANFLOW_ZOMBIE_AFTER:-}" ]; then
  [[ "$PLANFLOW_ZOMBIE_AFTER" =~ ^[0-9]+$ ]] && [ "$PLANFLOW_ZOMBIE_AFTER" -ge 10 ] || {
    echo "zombies: PLANFLOW_ZOMBIE_AFTER must be whole seconds, at least 10 (got '$PLANFLOW_ZOMBIE_AFTER')" >&2
    exit 2
  }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  sed -E "s/^  within: .*/  within: $PLANFLOW_ZOMBIE_AFTER/" "$FILE" >"$tmp/zombies.yaml"
  FILE="$tmp/zombies.yaml"
fi

# `prefect automation create` adds one more each time: delete the old one first.
if out="$("$PREFECT" automation delete "$NAME" 2>&1)"; then
  echo "zombies: replaced automation '$NAME'" >&2
elif ! grep -q "not found" <<<"$out"; then
  echo "$out" >&2
  exit 1
fi
"$PREFECT" automation create --from-file "$FILE" >&2
