"""PostgreSQL for more than one machine: scripts/postgres.sh starts a local server
(Debian's postgresql, initdb + pg_ctl as a non-root user, 127.0.0.1 only) with the
databases `prefect` and `planflow`; a Prefect server runs on the first, the ledger on
the second, and three flows run at once against both."""

from __future__ import annotations

import glob
import os
import shutil
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploykit import (
    REPO_ROOT,
    RUN_PY,
    PrefectServer,
    free_port,
    run_cmd,
    start_background,
    start_prefect_server,
    stop_prefect_server,
    subprocess_env,
)
from support.fake_openai import FakeOpenAI, Reply
from support.flows import echo_node

pytestmark = pytest.mark.slow

POSTGRES_SH = REPO_ROOT / "scripts" / "postgres.sh"
RUNS = 3
PLAN_TASKS = [("a", []), ("b", []), ("c", ["a", "b"]), ("d", ["c"])]


def _skip_reason() -> str | None:
    if not (glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")):
        return "PostgreSQL's initdb/pg_ctl are not installed: run scripts/install_test_deps.sh (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the ledger's PostgreSQL driver is missing: pip install -e '.[postgres]' (scripts/setup.sh does)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: cannot start PostgreSQL as a non-root user"
    return None


@dataclass
class Postgres:
    env: dict[str, str]
    prefect_url: str
    planflow_url: str
    data: Path


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp dir (mode 0700, root's): the server's user must enter every parent.
    base = Path(tempfile.mkdtemp(prefix="planflow-pg-"))
    base.chmod(base.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    env = subprocess_env(PLANFLOW_PG_DATA=str(base / "data"), PLANFLOW_PG_PORT=str(free_port()), PLANFLOW_PG_FSYNC="off")
    try:
        started = run_cmd([str(POSTGRES_SH), "start"], env, timeout=120)
        assert started.returncode == 0, f"scripts/postgres.sh start failed:\n{started.stderr}"
        urls = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
        assert set(urls) == {"PREFECT_API_DATABASE_CONNECTION_URL", "PLANFLOW_DATABASE_URL"}, started.stdout
        assert urls["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
        assert urls["PLANFLOW_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@127.0.0.1:" in urls["PLANFLOW_DATABASE_URL"]
        yield Postgres(env, urls["PREFECT_API_DATABASE_CONNECTION_URL"], urls["PLANFLOW_DATABASE_URL"], base / "data")
    finally:
        stopped = run_cmd([str(POSTGRES_SH), "stop"], env, timeout=90)
        shutil.rmtree(base, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def pg_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = start_prefect_server(
        tmp_path_factory.mktemp("pg-prefect-server"),
        PREFECT_API_DATABASE_CONNECTION_URL=postgres.prefect_url,
    )
    try:
        yield server
    finally:
        stop_prefect_server(server)


def test_script_starts_a_loopback_server_as_a_non_root_user(postgres: Postgres) -> None:
    import sqlalchemy as sa

    pid = int((postgres.data / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0, "PostgreSQL runs as root"
    status = run_cmd([str(POSTGRES_SH), "status"], postgres.env, timeout=30)
    assert status.returncode == 0 and "running on 127.0.0.1:" in status.stdout
    engine = sa.create_engine(postgres.planflow_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            tables = set(sa.inspect(conn).get_table_names())
            databases = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()
    assert {"prefect", "planflow"} <= databases
    assert {"runs", "nodes", "plan_versions", "llm_calls"} <= tables, "the ledger's tables were not created"


def test_concurrent_flows_on_postgres(postgres: Postgres, pg_server: PrefectServer, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from planner.ledger import Ledger

    fake = FakeOpenAI(lambda body: Reply(content=echo_node(body), delay=0.3)).start()
    procs = []
    try:
        plan = tmp_path / "plan.json"
        plan.write_text(
            '{"tasks": ['
            + ", ".join(f'{{"id": "{i}", "description": "do {i}", "depends_on": {list(d)!r}}}'.replace("'", '"')
                        for i, d in PLAN_TASKS)
            + "]}"
        )
        env = subprocess_env(
            PREFECT_API_URL=pg_server.api,
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            PLANFLOW_DATABASE_URL=postgres.planflow_url,
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_API_KEY="sk-test-key",
        )
        keys = [f"pg-{i}-{uuid.uuid4().hex[:8]}" for i in range(RUNS)]
        started = time.monotonic()
        for i, key in enumerate(keys):
            procs.append(start_background(
                f"run-{i}", [sys.executable, str(RUN_PY), f"Goal number {i}", "--run-key", key, "--plan", str(plan), "--quiet"],
                env, tmp_path,
            ))
        for proc in procs:
            try:
                proc.proc.wait(timeout=180)
            except Exception:
                pytest.fail(f"{proc.name} did not finish in 180 s:\n{proc.tail()}")
        elapsed = time.monotonic() - started
        for proc in procs:
            assert proc.proc.returncode == 0, f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}"
    finally:
        for proc in procs:
            proc.kill()
        fake.stop()

    # The ledger, in PostgreSQL, has every run and node.
    ledger = Ledger(postgres.planflow_url)
    try:
        assert ledger.engine.dialect.name == "postgresql"
        for key in keys:
            run = ledger.run(key)
            assert run is not None and run.status == "completed", (key, run)
            assert run.answer == "result of node:d"
            assert {n.node_id: n.status for n in ledger.nodes(key)} == {i: "completed" for i, _ in PLAN_TASKS}
        runs = [ledger.run(k) for k in keys]
        # They ran at the same time: each started before any finished.
        assert max(r.started_at for r in runs) < min(r.finished_at for r in runs), "the runs did not overlap"
    finally:
        ledger.close()

    # Prefect's own state is in PostgreSQL too: its flow_run table has the three runs, completed.
    prefect_db = sa.create_engine(postgres.prefect_url.replace("+asyncpg", "+psycopg"))
    try:
        with prefect_db.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT name, state_type FROM flow_run WHERE name = ANY(:names)"), {"names": keys}
            ).all()
    finally:
        prefect_db.dispose()
    assert sorted(rows) == sorted((k, "COMPLETED") for k in keys)
    print(f"{RUNS} concurrent runs on PostgreSQL in {elapsed:.1f}s")
