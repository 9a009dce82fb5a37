#!/usr/bin/env bash
# System packages the slow deployment tests use, installed only if missing:
#   chromium    headless screenshots of the Prefect UI (tests/deployments/test_ui_screenshot.py)
#   postgresql  initdb/pg_ctl for scripts/postgres.sh (tests/deployments/test_postgres.py)
# (The ledger's PostgreSQL driver, psycopg, is the `postgres` extra that scripts/setup.sh installs.)
# Needs root (or sudo) for apt-get. Safe to re-run; does nothing when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install_test_deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "install_test_deps: ready" >&2
