#!/usr/bin/env bash
# A local PostgreSQL for the Prefect server and the Planflow ledger, from Debian's
# `postgresql` package (initdb + pg_ctl), listening on 127.0.0.1 only, run by a
# non-root user, with two databases: `prefect` and `planflow`.
#
#   scripts/postgres.sh start    # initdb on first use, start, create the databases,
#                                # then print the two URLs as `export` lines
#   scripts/postgres.sh env      # print the URLs again
#   scripts/postgres.sh status
#   scripts/postgres.sh stop
#
#   eval "$(scripts/postgres.sh start)"     # sets both variables in this shell
#
# Settings (environment):
#   PLANFLOW_PG_DATA      data directory (default <project>/.planflow/postgres);
#                         every parent directory must be enterable by the server's user
#   PLANFLOW_PG_PORT      port (default 5433, so a system cluster on 5432 is left alone)
#   PLANFLOW_PG_USER      database role and password owner (default planflow)
#   PLANFLOW_PG_PASSWORD  its password (default planflow; a local development default)
#   PLANFLOW_PG_OS_USER   the Unix user the server runs as when this script runs as root
#                         (default postgres, created by the Debian package; else planflowpg)
#   PG_BIN                directory of initdb/pg_ctl (default: newest /usr/lib/postgresql/*/bin)
#   PLANFLOW_PG_FSYNC     on (default) or off: off only for a throwaway cluster (tests), where
#                         losing data in a machine crash does not matter and speed does
#
# Install the server with: apt-get install -y postgresql   (or scripts/install_test_deps.sh)
# The ledger needs the psycopg driver in the venv: the `postgres` extra (scripts/setup.sh installs it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

DATA="${PLANFLOW_PG_DATA:-$ROOT/.planflow/postgres}"
PORT="${PLANFLOW_PG_PORT:-5433}"
HOST=127.0.0.1
DB_USER="${PLANFLOW_PG_USER:-planflow}"
DB_PASSWORD="${PLANFLOW_PG_PASSWORD:-planflow}"
FSYNC="${PLANFLOW_PG_FSYNC:-on}"
case "$FSYNC" in on|off) ;; *) echo "postgres: PLANFLOW_PG_FSYNC must be on or off" >&2; exit 2 ;; esac
LOG="$DATA/../postgres-$PORT.log"

die() { echo "postgres: $*" >&2; exit 1; }

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local newest
  newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then echo "$newest"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  die "initdb/pg_ctl not found: apt-get install -y postgresql (or run scripts/install_test_deps.sh)"
}
BIN="$(find_bin)"

# Run a PostgreSQL binary as the non-root server user (as ourselves when not root).
OS_USER=""
if [ "$(id -u)" = 0 ]; then
  OS_USER="${PLANFLOW_PG_OS_USER:-}"
  if [ -z "$OS_USER" ]; then
    if id postgres >/dev/null 2>&1; then OS_USER=postgres; else OS_USER=planflowpg; fi
  fi
  if ! id "$OS_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
  fi
fi
as_server_user() {
  if [ -n "$OS_USER" ]; then
    (cd / && runuser -u "$OS_USER" -- "$@")
  else
    "$@"
  fi
}

urls() {
  local auth="$DB_USER:$DB_PASSWORD@$HOST:$PORT"
  echo "export PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://$auth/prefect"
  echo "export PLANFLOW_DATABASE_URL=postgresql+psycopg://$auth/planflow"
}

is_running() { as_server_user "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_local() {
  as_server_user env PGPASSWORD="$DB_PASSWORD" \
    "$BIN/psql" -h "$HOST" -p "$PORT" -U "$DB_USER" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

start() {
  mkdir -p "$DATA"
  DATA="$(cd "$DATA" && pwd)"
  LOG="$(dirname "$DATA")/postgres-$PORT.log"
  if [ -n "$OS_USER" ]; then
    chown "$OS_USER" "$DATA"
    touch "$LOG" && chown "$OS_USER" "$LOG"
    as_server_user test -w "$DATA" \
      || die "user $OS_USER cannot write $DATA: every parent directory must be enterable (chmod o+x) by $OS_USER"
  fi
  chmod 700 "$DATA"

  if [ ! -f "$DATA/PG_VERSION" ]; then
    local pwfile
    pwfile="$(mktemp)"
    printf '%s\n' "$DB_PASSWORD" >"$pwfile"
    [ -n "$OS_USER" ] && chown "$OS_USER" "$pwfile"
    echo "postgres: initdb $DATA (superuser $DB_USER)" >&2
    local nosync=()
    [ "$FSYNC" = off ] && nosync=(--no-sync)
    as_server_user "$BIN/initdb" -D "$DATA" -U "$DB_USER" --pwfile="$pwfile" "${nosync[@]}" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null \
      || { rm -f "$pwfile"; die "initdb failed"; }
    rm -f "$pwfile"
    {
      echo "listen_addresses = '$HOST'"
      echo "port = $PORT"
      echo "unix_socket_directories = ''"
      echo "max_connections = 200"
    } >>"$DATA/postgresql.conf"
  fi

  if is_running; then
    echo "postgres: already running on $HOST:$PORT ($DATA)" >&2
  else
    echo "postgres: starting on $HOST:$PORT (log $LOG)" >&2
    as_server_user "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -o "-p $PORT -c listen_addresses=$HOST -c fsync=$FSYNC -c synchronous_commit=$FSYNC" -w -t 60 start >/dev/null \
      || { tail -n 20 "$LOG" >&2; die "pg_ctl start failed"; }
  fi

  for db in prefect planflow; do
    if [ "$(psql_local -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      psql_local -c "CREATE DATABASE $db"
      echo "postgres: created database $db" >&2
    fi
  done
  init_ledger
  urls
}

# Create the ledger's tables now, once: runs that start at the same moment on an empty
# database would otherwise all try to create them at once.
init_ledger() {
  local py="$ROOT/.venv/bin/python"
  [ -x "$py" ] || { echo "postgres: no .venv; the ledger's tables are created by the first run" >&2; return 0; }
  if ! "$py" -c 'import psycopg' 2>/dev/null; then
    echo "postgres: the ledger needs the psycopg driver: $py -m pip install -e '.[postgres]'" >&2
    return 0
  fi
  local url
  url="$(urls | sed -n 's/^export PLANFLOW_DATABASE_URL=//p')"
  (cd "$ROOT" && "$py" -c 'import sys; from planner.ledger import Ledger; Ledger(sys.argv[1]).engine.dispose()' "$url") \
    || die "could not create the ledger's tables in $url"
}

stop() {
  if [ ! -f "$DATA/PG_VERSION" ]; then echo "postgres: no cluster at $DATA" >&2; return 0; fi
  if is_running; then
    as_server_user "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    echo "postgres: stopped ($DATA)" >&2
  else
    echo "postgres: not running" >&2
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) urls ;;
  status)
    if [ -f "$DATA/PG_VERSION" ] && is_running; then echo "running on $HOST:$PORT ($DATA)"; else echo "not running"; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
