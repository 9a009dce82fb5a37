# Sourced by the deployments/ scripts: project paths, the prefect executable, defaults.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFECT="${PREFECT:-$ROOT/.venv/bin/prefect}"
[ -x "$PREFECT" ] || PREFECT="$(command -v prefect || true)"
[ -n "$PREFECT" ] || { echo "deployments: no prefect executable (run scripts/setup.sh)" >&2; exit 2; }
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
POOL="${PLANFLOW_WORK_POOL:-planflow}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
need_api_url() {
  [ -n "${PREFECT_API_URL:-}" ] || "$PREFECT" config view 2>/dev/null | grep -q "^PREFECT_API_URL=" || {
    echo "deployments: set PREFECT_API_URL (e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api);" \
         "scripts/prefect_server.sh start runs a local server" >&2
    exit 2
  }
}
