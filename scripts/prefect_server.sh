#!/usr/bin/env bash
# Start or stop a local Prefect server (API + UI) on a loopback port, analytics off.
#
#   scripts/prefect_server.sh start    # starts it in the background, waits for /api/health
#   scripts/prefect_server.sh status   # running or not, and its URL
#   scripts/prefect_server.sh stop     # stops the server this script started
#   scripts/prefect_server.sh url      # prints the API URL to export as PREFECT_API_URL
#
# Settings (environment):
#   PREFECT_HOME         the server's home: its SQLite database, server.pid, server.log
#                        (default: <project>/.prefect/server)
#   PREFECT_SERVER_PORT  port (default 4200); host is always 127.0.0.1
#   PREFECT_API_DATABASE_CONNECTION_URL
#                        a PostgreSQL database instead of SQLite, e.g. the URL that
#                        scripts/postgres.sh prints (postgresql+asyncpg://...)
#   STARTUP_TIMEOUT      seconds to wait for /api/health (default 120; a fresh SQLite
#                        database is migrated first, 20-30 s on 2 cores)
#
# Then:  export PREFECT_API_URL=http://127.0.0.1:4200/api   (UI at http://127.0.0.1:4200)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFECT="${PREFECT:-$ROOT/.venv/bin/prefect}"
[ -x "$PREFECT" ] || PREFECT="$(command -v prefect || true)"
[ -n "$PREFECT" ] || { echo "prefect_server: no prefect executable (run scripts/setup.sh)" >&2; exit 2; }

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect/server}"
PORT="${PREFECT_SERVER_PORT:-4200}"
HOST=127.0.0.1
URL="http://$HOST:$PORT"
PIDFILE="$PREFECT_HOME/server.pid"
LOG="$PREFECT_HOME/server.log"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-120}"

healthy() {
  "$ROOT/.venv/bin/python" - "$URL/api/health" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  mkdir -p "$PREFECT_HOME"
  if pid="$(running_pid)"; then
    echo "prefect_server: already running (pid $pid) at $URL" >&2
    echo "$URL/api"
    return 0
  fi
  if healthy; then
    echo "prefect_server: something else already answers at $URL; pick another PREFECT_SERVER_PORT" >&2
    exit 1
  fi
  # Own session (setsid): `stop` signals this process group only.
  PREFECT_SERVER_ANALYTICS_ENABLED=false \
  PREFECT_UI_ENABLED=true \
  PREFECT_SERVER_UI_ENABLED=true \
  PREFECT_UI_API_URL="$URL/api" \
    setsid "$PREFECT" server start --host "$HOST" --port "$PORT" --analytics-off \
      </dev/null >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until healthy; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "prefect_server: the server exited; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "prefect_server: no answer from $URL/api/health after ${STARTUP_TIMEOUT}s; see $LOG" >&2
      stop
      exit 1
    fi
    sleep 0.5
  done
  echo "prefect_server: up at $URL (pid $(cat "$PIDFILE"), home $PREFECT_HOME, log $LOG)" >&2
  echo "$URL/api"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "prefect_server: not running" >&2
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "prefect_server: stopped (pid $pid)" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)" && healthy; then echo "running (pid $pid) at $URL"; else echo "not running"; exit 1; fi
    ;;
  url) echo "$URL/api" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
