"""Fixtures of the deployment tests: a real local Prefect server (scripts/prefect_server.sh),
a fake OpenAI server of their own, and one flow run against the server shared by the
artifact and UI tests. All on 127.0.0.1; all stopped at teardown."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from deploykit import (
    ANSWER,
    PLAN,
    RUN_PY,
    CompletedRun,
    PrefectServer,
    run_cmd,
    start_prefect_server,
    stop_prefect_server,
    subprocess_env,
)
from support.fake_openai import FakeOpenAI
from support.flows import echo_node, route


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real local Prefect server (API + UI, SQLite) for the deployment tests."""
    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server
    finally:
        stop_prefect_server(server)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server of the deployment tests' own: nodes echo their id."""
    server = FakeOpenAI(echo_node, key_fn=route).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def completed_run(prefect_server: PrefectServer, llm_server: FakeOpenAI, tmp_path_factory) -> CompletedRun:
    """`python flows/run.py GOAL` against the server (model plans PLAN; two sinks: synthesis)."""
    tmp = tmp_path_factory.mktemp("server-run")
    run_key = f"lisbon-{uuid.uuid4().hex[:8]}"
    goal = "Plan a 3-day trip to Lisbon"
    llm_server.reset()
    llm_server.set_default(echo_node)
    llm_server.script("plan", json.dumps(PLAN))
    llm_server.script("synthesis", ANSWER)
    env = subprocess_env(
        PREFECT_API_URL=prefect_server.api,
        PREFECT_HOME=str(tmp / "prefect-home"),
        OPENAI_BASE_URL=llm_server.base_url,
        OPENAI_API_KEY="sk-test-key",
    )
    started = time.monotonic()
    result = run_cmd([sys.executable, str(RUN_PY), goal, "--run-key", run_key, "--quiet"], env, timeout=180, cwd=tmp)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"flows/run.py exited {result.returncode}:\n{result.stderr[-4000:]}"
    flow_run = prefect_server.flow_run_named(run_key)
    assert flow_run is not None, f"no flow run named {run_key!r} on the server"
    return CompletedRun(run_key, goal, flow_run, ANSWER, result.stdout, result.stderr, seconds)
