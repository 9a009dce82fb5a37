"""Fixtures of the deployment tests: a real local Prefect server (scripts/prefect_server.sh),
a fake OpenAI server of their own, the deployments' stack (pool, zombie automation,
deployments, a worker, serve.py) and one flow run against the server shared by the
artifact and UI tests. All on 127.0.0.1; all stopped at teardown."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from deploykit import (
    ANSWER,
    DAILY,
    DEPLOYMENTS,
    IN_FLIGHT,
    ON_EVENT,
    PLAN,
    RUN_PY,
    SERVED,
    ZOMBIE_AFTER,
    CompletedRun,
    PrefectServer,
    Stack,
    run_cmd,
    start_background,
    start_prefect_server,
    start_worker,
    stop_prefect_server,
    subprocess_env,
    wait_for,
    worker_started,
)
from support.fake_openai import FakeOpenAI
from support.flows import echo_node, plan_json, route


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
        PLANFLOW_TASK_TAGS="true",  # opt-in (a round trip per task run): the UI's filter by run is tested
    )
    started = time.monotonic()
    result = run_cmd([sys.executable, str(RUN_PY), goal, "--run-key", run_key, "--quiet"], env, timeout=180, cwd=tmp)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"flows/run.py exited {result.returncode}:\n{result.stderr[-4000:]}"
    flow_run = prefect_server.flow_run_named(run_key)
    assert flow_run is not None, f"no flow run named {run_key!r} on the server"
    return CompletedRun(run_key, goal, flow_run, ANSWER, result.stdout, result.stderr, seconds)


@pytest.fixture(scope="session")
def stack(
    prefect_server: PrefectServer, llm_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The user's steps, overlapped where they can be: deployments/create_pool.sh,
    deployments/zombies.sh (with a short window), deployments/worker.sh (a process worker),
    deployments/deploy.sh (prefect --no-prompt deploy --all), and deployments/serve.py.
    Flow runs of the worker and of serve.py talk to the fake model (OPENAI_BASE_URL in
    their environment). A test may kill the worker; it then puts a new one in `stack.worker`."""
    llm_server.reset()
    llm_server.set_default(echo_node)
    llm_server.script("plan", plan_json(("first", []), ("second", ["first"])))
    logs = tmp_path_factory.mktemp("stack")
    env = subprocess_env(PREFECT_API_URL=prefect_server.api, PREFECT_HOME=str(logs / "prefect-home"))
    runner_env = dict(
        env,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        OPENAI_BASE_URL=llm_server.base_url,
        OPENAI_API_KEY="sk-test-key",
        PLANFLOW_REQUEST_TIMEOUT=str(IN_FLIGHT + 60),
    )
    # serve.py without its event trigger: the on-goal-submitted deployment already reacts to it.
    serve = start_background(
        "serve", [sys.executable, str(DEPLOYMENTS / "serve.py"), "--name", SERVED.split("/")[1], "--no-event-trigger"],
        runner_env, logs, cwd=logs,
    )
    stack = None
    try:
        pool = run_cmd([str(DEPLOYMENTS / "create_pool.sh")], env, timeout=120)
        assert pool.returncode == 0, f"create_pool.sh failed:\n{pool.stdout[-3000:]}\n{pool.stderr[-3000:]}"
        worker = start_worker("worker", runner_env, logs)
        stack = Stack(env, runner_env, {}, worker, serve, logs)
        zombies = run_cmd([str(DEPLOYMENTS / "zombies.sh")], dict(env, PLANFLOW_ZOMBIE_AFTER=str(ZOMBIE_AFTER)))
        assert zombies.returncode == 0, f"zombies.sh failed:\n{zombies.stdout[-3000:]}\n{zombies.stderr[-3000:]}"
        deploy = run_cmd([str(DEPLOYMENTS / "deploy.sh")], env, timeout=180)
        assert deploy.returncode == 0, f"deploy.sh failed:\n{deploy.stdout[-3000:]}\n{deploy.stderr[-3000:]}"
        for name in (DAILY, ON_EVENT):
            try:
                stack.deployments[name] = prefect_server.request("GET", f"/deployments/name/{name}").json()
            except httpx.HTTPStatusError as error:
                pytest.fail(f"{name} was not deployed ({error}):\n{deploy.stdout[-3000:]}")

        def up() -> bool:
            assert serve.alive(), f"serve.py exited:\n{serve.tail()}"
            return worker_started(stack.worker) and "polling" in serve.tail()

        wait_for(up, 120, "the worker and serve.py to start")
        yield stack
    finally:
        if stack is not None:
            stack.worker.kill()
        serve.kill()
