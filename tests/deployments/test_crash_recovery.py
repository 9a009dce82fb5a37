"""A deployment run whose process dies mid-run, and how it comes back, for real: the
process worker of deployments/worker.sh runs the on-goal-submitted deployment, and the
flow run's own process is SIGKILLed once two nodes are done and the third is in flight.

- The worker sees its child die and marks the run Crashed; `prefect flow-run retry ID`
  queues the same flow run again and the worker finishes it.
- The same crash, resumed by run key instead: `python flows/run.py --run-key KEY GOAL`.
- The worker dies too: nobody reports the run, its heartbeats stop, and the automation of
  deployments/zombies.yaml (installed by deployments/zombies.sh) marks it Crashed.

The fake model counts calls per node: a node finished before the kill is never paid twice.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import yaml
from deploykit import (
    DEPLOYMENTS,
    IN_FLIGHT,
    ON_EVENT,
    PREFECT,
    REPO_ROOT,
    RUN_PY,
    ZOMBIE_AFTER,
    PrefectServer,
    Stack,
    flow_run_processes,
    run_cmd,
    sigkill,
    start_worker,
    wait_for,
    worker_started,
)
from support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 150.0
HEARTBEAT = "prefect.flow-run.heartbeat"
WORKER_EXECUTED = "prefect.worker.executed-flow-run"
ZOMBIE_MESSAGE = yaml.safe_load((DEPLOYMENTS / "zombies.yaml").read_text())["actions"][0]["message"]


@dataclass
class Victim:
    """A run of a 4-node chain n1 -> n2 -> n3 -> n4 whose n3 is slow on its first call."""

    prefix: str
    run_key: str
    goal: str
    flow_run_id: str = ""
    done_at_kill: frozenset[str] = frozenset()

    @property
    def nodes(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, 5)]

    @property
    def answer(self) -> str:
        return f"result of node:{self.nodes[-1]}"  # one sink: its result is the answer


def submit(server: PrefectServer, llm: FakeOpenAI, prefix: str) -> Victim:
    """A run of on-goal-submitted with a plan (through the API: test_deployments.py covers
    the scripts); node 3's first call outlasts the test, so it is in flight at the kill,
    and its next one is answered at once."""
    victim = Victim(prefix, f"{prefix}-{uuid.uuid4().hex[:8]}", f"Survive a crash ({prefix})")
    n = victim.nodes
    llm.script(f"node:{n[2]}", Reply(content="too late", delay=IN_FLIGHT), Reply(content=f"result of node:{n[2]}"))
    plan = {"tasks": [{"id": node, "description": f"do {node}", "depends_on": n[i - 1:i]} for i, node in enumerate(n)]}
    run = server.run_deployment(ON_EVENT, {"goal": victim.goal, "run_key": victim.run_key, "plan": plan})
    victim.flow_run_id = run["id"]
    return victim


def completed_nodes(ledger, victim: Victim) -> set[str]:
    return {node.node_id for node in ledger.nodes(victim.run_key) if node.status == "completed"}


def mid_run(ledger, llm: FakeOpenAI, victim: Victim) -> bool:
    """Nodes 1 and 2 are done and node 3's call waits at the model."""
    n = victim.nodes
    return completed_nodes(ledger, victim) == set(n[:2]) and len(llm.calls_for(f"node:{n[2]}")) == 1


def kill_flow_run_process(ledger, victim: Victim) -> None:
    """SIGKILL the process executing the flow run (the worker's child), then note what was done."""
    pids = flow_run_processes(victim.flow_run_id)
    assert pids, f"no process is executing flow run {victim.flow_run_id}"
    sigkill(pids)
    wait_for(lambda: not flow_run_processes(victim.flow_run_id), 15, "the flow run's process to die")
    victim.done_at_kill = frozenset(completed_nodes(ledger, victim))
    assert victim.done_at_kill == set(victim.nodes[:2]), victim.done_at_kill


def assert_finished_nodes_paid_once(llm: FakeOpenAI, victim: Victim) -> None:
    n = victim.nodes
    calls = {node: len(llm.calls_for(f"node:{node}")) for node in n}
    for node in victim.done_at_kill:
        assert calls[node] == 1, f"{node} finished before the kill and was called again: {calls}"
    assert calls[n[2]] == 2, calls  # in flight at the kill (never answered), then again
    assert calls[n[3]] == 1, calls


def assert_resumed_in_ledger(ledger, victim: Victim) -> None:
    record = ledger.run(victim.run_key)
    assert record.status == "completed" and record.answer == victim.answer, (record.status, record.error)
    status = {node.node_id: node.status for node in ledger.nodes(victim.run_key)}
    assert status == {**{n: "cached" for n in victim.done_at_kill}, **{n: "completed" for n in victim.nodes[2:]}}, status


@pytest.fixture(scope="module")
def ledger():
    """The ledger the worker's flow runs write: the session's PLANFLOW_HOME, which they inherit."""
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    led = Ledger(PlanflowSettings().ledger_url)
    yield led
    led.close()


@dataclass
class Killed:
    retried: Victim  # to resume with prefect flow-run retry
    by_key: Victim  # to resume with flows/run.py --run-key


@pytest.fixture(scope="module")
def zombie(prefect_server: PrefectServer, llm_server: FakeOpenAI, stack: Stack) -> Victim:
    """A run submitted first, so that its wait for heartbeats overlaps the other tests."""
    return submit(prefect_server, llm_server, "z")


@pytest.fixture(scope="module")
def killed(zombie: Victim, stack: Stack, llm_server: FakeOpenAI, prefect_server: PrefectServer, ledger) -> Killed:
    """Two runs at once on the worker, each killed mid-run; the worker marks both Crashed."""
    victims = Killed(submit(prefect_server, llm_server, "w"), submit(prefect_server, llm_server, "k"))
    for victim in (victims.retried, victims.by_key):
        wait_for(lambda: mid_run(ledger, llm_server, victim), RUN_TIMEOUT,
                 f"{victim.run_key}: two nodes done, the third in flight\n{stack.logs()}")
        assert prefect_server.flow_run(victim.flow_run_id)["state_type"] == "RUNNING"
        kill_flow_run_process(ledger, victim)
    for victim in (victims.retried, victims.by_key):
        run = prefect_server.wait_final(victim.flow_run_id, 60, stack.logs)
        assert run["state_type"] == "CRASHED", run["state"]
        # The worker said so, with the exit status of its child.
        assert "status code: -9" in run["state"]["message"], run["state"]
        assert ledger.run(victim.run_key).status == "running"  # nobody finished it in the ledger
        worker_done_with(prefect_server, victim)
    return victims


def worker_done_with(server: PrefectServer, victim: Victim) -> None:
    """Wait for the worker's `prefect.worker.executed-flow-run` event about the killed run.
    Prefect 3.9.1's worker reports a crash twice: at once, and again seconds later (after
    importing the flow to look for on_crashed hooks); a retry in between is crashed by
    the second report."""
    resource = f"prefect.flow-run.{victim.flow_run_id}"

    def executed() -> list[dict]:
        return server.events(WORKER_EXECUTED, related_id=resource)

    (event,) = wait_for(executed, 60, f"the worker to be done with {victim.run_key}")
    (flow_run,) = [r for r in event["related"] if r["prefect.resource.id"] == resource]
    assert flow_run["prefect.infrastructure.status-code"] == "-9", event


def test_a_killed_run_is_crashed_and_prefect_flow_run_retry_resumes_it(
    killed: Killed, stack: Stack, llm_server: FakeOpenAI, prefect_server: PrefectServer, ledger
) -> None:
    victim = killed.retried
    # What a person types (from the project directory, the server in PREFECT_API_URL). For a
    # deployment's run, Prefect only puts it back in the queue; the worker runs it.
    retry = run_cmd([PREFECT, "flow-run", "retry", victim.flow_run_id], stack.env, timeout=90, cwd=REPO_ROOT)
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert "scheduled for retry" in retry.stdout, retry.stdout
    run = prefect_server.wait_final(victim.flow_run_id, RUN_TIMEOUT, stack.logs)
    assert run["state_type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"
    assert run["run_count"] == 2  # the same flow run, run a second time
    assert_finished_nodes_paid_once(llm_server, victim)
    assert_resumed_in_ledger(ledger, victim)
    assert ledger.run(victim.run_key).flow_run_id == victim.flow_run_id


def test_a_killed_run_resumes_by_its_run_key(
    killed: Killed, stack: Stack, llm_server: FakeOpenAI, prefect_server: PrefectServer, ledger
) -> None:
    victim = killed.by_key
    # The CLI on the worker's machine: the same server, model and task results (PREFECT_HOME).
    env = dict(
        stack.env,
        PREFECT_HOME=stack.worker_prefect_home,
        OPENAI_BASE_URL=llm_server.base_url,
        OPENAI_API_KEY="sk-test-key",
    )
    result = run_cmd([sys.executable, str(RUN_PY), "--run-key", victim.run_key, victim.goal, "--quiet"], env, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == victim.answer + "\n"
    assert_finished_nodes_paid_once(llm_server, victim)
    assert_resumed_in_ledger(ledger, victim)
    # A new flow run of the same name did it; the killed one stays Crashed.
    resumed_id = ledger.run(victim.run_key).flow_run_id
    assert resumed_id != victim.flow_run_id
    assert prefect_server.flow_run(resumed_id)["state_type"] == "COMPLETED"
    assert prefect_server.flow_run(resumed_id)["name"] == victim.run_key
    assert prefect_server.flow_run(victim.flow_run_id)["state_type"] == "CRASHED"


def test_a_run_whose_worker_died_too_is_crashed_by_the_zombie_automation(
    zombie: Victim, stack: Stack, llm_server: FakeOpenAI, prefect_server: PrefectServer, ledger
) -> None:
    (automation,) = prefect_server.automations_named("planflow-zombie-runs")
    assert automation["enabled"] and automation["trigger"]["within"] == ZOMBIE_AFTER
    victim = zombie  # running on the worker since before the tests above
    resource = f"prefect.flow-run.{victim.flow_run_id}"
    wait_for(lambda: mid_run(ledger, llm_server, victim), RUN_TIMEOUT, f"{victim.run_key} mid-run\n{stack.logs()}")

    # A live run beats every 30 s (prefect.yaml's job variables) and outlives a whole
    # window of the automation: it is not taken for dead.
    beats = wait_for(lambda: (b := prefect_server.events(HEARTBEAT, resource)) and len(b) >= 2 and b,
                     75, "two heartbeats of the run")
    first = min(b["occurred"] for b in beats)
    wait_for(lambda: _seconds_since(first) > ZOMBIE_AFTER + 8, 60, "a window of the automation to pass")
    alive = prefect_server.flow_run(victim.flow_run_id)
    assert alive["state_type"] == "RUNNING", alive["state"]

    # Worker and flow run die together (the worker's kill takes its children): no one reports it.
    assert flow_run_processes(victim.flow_run_id)
    stack.worker.kill()
    wait_for(lambda: not flow_run_processes(victim.flow_run_id), 15, "the flow run's process to die")
    killed_at = time.monotonic()
    victim.done_at_kill = frozenset(completed_nodes(ledger, victim))
    assert victim.done_at_kill == set(victim.nodes[:2])
    stack.worker = start_worker(f"worker-after-{victim.prefix}", stack.runner_env, stack.log_dir)

    run = prefect_server.wait_final(victim.flow_run_id, ZOMBIE_AFTER + 30 + 40, stack.logs)
    waited = time.monotonic() - killed_at
    assert run["state_type"] == "CRASHED", run["state"]
    assert run["state"]["message"] == ZOMBIE_MESSAGE, run["state"]

    # Crashed like any other: the new worker resumes it, finished nodes replayed.
    wait_for(lambda: worker_started(stack.worker), 60, "the new worker to start")
    retry = run_cmd([PREFECT, "flow-run", "retry", victim.flow_run_id], stack.env, timeout=90, cwd=REPO_ROOT)
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    run = prefect_server.wait_final(victim.flow_run_id, RUN_TIMEOUT, stack.logs)
    assert run["state_type"] == "COMPLETED", f"{run['state']['message']}\n{stack.logs()}"
    assert_finished_nodes_paid_once(llm_server, victim)
    assert_resumed_in_ledger(ledger, victim)
    print(f"zombie marked Crashed {waited:.0f} s after the kill")


def _seconds_since(occurred: str) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(occurred.replace("Z", "+00:00"))).total_seconds()
