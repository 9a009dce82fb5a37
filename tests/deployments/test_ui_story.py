"""The Prefect UI tells the story of a replanned run and of a paused one, read in a real
browser (headless Chromium driven over its DevTools protocol, tests/deployments/cdp.py)
against the session's real server, and checked against the API.

A replanned run: `draft` fails for good (the model answers 400), the replanner
rewrites it, the run completes. Plan v1's final card shows `draft` failed and `review`
skipped, with a legend; plan v2's card names the failed node, its error, the action
and the diff; the replan subflow's page carries its own card; a task run's page shows
its cache key and a retry delay (flows/ui_fields.py). A paused run (`--approve-plan`):
the pause form describes every field and holds the plan pretty-printed; it is then
resumed through the API and completes. Screenshots go to each test's tmp dir and
test-output/ (gitignored)."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cdp import CHROMIUM, Browser
from deploykit import (
    PLAN,
    RUN_PY,
    TEST_OUTPUT,
    Background,
    PrefectServer,
    run_cmd,
    start_background,
    subprocess_env,
    wait_for,
)
from flows.artifacts import artifact_key
from support.fake_openai import FakeOpenAI, Reply
from support.flows import echo_node, route

pytestmark = pytest.mark.slow

GOAL = "Plan a 3-day trip to Lisbon"
ERROR = "context length exceeded: 9000 tokens"
REASON = "the itinerary was too long; draft it one line per day"
REWRITTEN = "Draft a short itinerary, one line per day"


@dataclass
class Run:
    run_key: str
    flow_run_id: str


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium): run scripts/install_test_deps.sh")
    browser = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def story_llm() -> Iterator[FakeOpenAI]:
    """A fake model of this module's own: its scripts cannot meet another fixture's."""
    server = FakeOpenAI(echo_node, key_fn=route).start()
    try:
        yield server
    finally:
        server.stop()


def _env(prefect_server: PrefectServer, llm: FakeOpenAI, home: Path) -> dict[str, str]:
    # Prefect's default retry settings (the session's are shortened): what a user's page shows.
    return subprocess_env(
        PREFECT_API_URL=prefect_server.api,
        PREFECT_HOME=str(home / "prefect-home"),
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="sk-test-key",
        PLANFLOW_RETRY_BACKOFF="1",
        PLANFLOW_RETRY_JITTER="0.5",
        PLANFLOW_PAUSE_POLL_SECONDS="1",
    )


@pytest.fixture(scope="module")
def replanned_run(prefect_server: PrefectServer, story_llm: FakeOpenAI, tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("replanned-run")
    run_key = f"replanned-{uuid.uuid4().hex[:8]}"
    story_llm.reset()
    story_llm.set_default(echo_node)
    story_llm.script("plan", json.dumps(PLAN))
    story_llm.script("node:draft", Reply(status=400, error_message=ERROR))
    story_llm.script("replan", json.dumps({
        "action": "retry_modified", "reason": REASON,
        "tasks": [{"id": "draft", "description": REWRITTEN, "depends_on": ["gather", "budget"]}],
    }))
    env = _env(prefect_server, story_llm, tmp)
    result = run_cmd([sys.executable, str(RUN_PY), GOAL, "--run-key", run_key, "--quiet"], env, timeout=300, cwd=tmp)
    calls = [(c.key, c.status) for c in story_llm.calls]
    assert result.returncode == 0, f"flows/run.py exited {result.returncode}:\n{result.stderr[-4000:]}\n{calls}"
    assert story_llm.calls_for("replan"), "the replanner was never asked"
    flow_run = prefect_server.flow_run_named(run_key)
    assert flow_run is not None and flow_run["state_type"] == "COMPLETED", flow_run
    return Run(run_key, flow_run["id"])


@pytest.fixture(scope="module")
def paused_run(prefect_server: PrefectServer, story_llm: FakeOpenAI, tmp_path_factory) -> Iterator[Run]:
    """A run waiting for a person to approve its plan; resumed at teardown if a test did not."""
    tmp = tmp_path_factory.mktemp("paused-run")
    run_key = f"paused-{uuid.uuid4().hex[:8]}"
    story_llm.reset()
    story_llm.set_default(echo_node)
    story_llm.script("plan", json.dumps(PLAN))
    cmd = [sys.executable, str(RUN_PY), GOAL, "--run-key", run_key, "--approve-plan", "--quiet"]
    process: Background = start_background("paused-run", cmd, _env(prefect_server, story_llm, tmp), tmp, cwd=tmp)
    run = None
    try:
        def paused() -> dict[str, Any] | None:
            assert process.alive(), f"the paused run exited:\n{process.tail()}"
            flow_run = prefect_server.flow_run_named(run_key)
            return flow_run if flow_run and flow_run["state_type"] == "PAUSED" else None

        run = Run(run_key, wait_for(paused, 180, "the run to pause for approval")["id"])
        yield run
    finally:
        if run is not None and prefect_server.flow_run(run.flow_run_id)["state_type"] == "PAUSED":
            _resume(prefect_server, run.flow_run_id, {"action": "abort", "reason": "test teardown"})
            prefect_server.wait_final(run.flow_run_id, 120, process.tail)
        process.kill()


def _resume(prefect_server: PrefectServer, flow_run_id: str, run_input: dict[str, Any]) -> None:
    """What the form's Resume/Submit button sends."""
    r = prefect_server.request("POST", f"/flow_runs/{flow_run_id}/resume", json={"run_input": run_input})
    assert r.json()["status"] == "ACCEPT", r.json()


def _latest_artifact(prefect_server: PrefectServer, kind: str, run_key: str) -> dict[str, Any]:
    key = artifact_key(kind, run_key)
    r = prefect_server.request("POST", "/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}})
    (latest,) = r.json()
    return prefect_server.request("GET", f"/artifacts/{latest['latest_id']}").json()


def _shot(browser: Browser, tmp_path: Path, name: str) -> None:
    shot = browser.screenshot(tmp_path / name)
    TEST_OUTPUT.mkdir(exist_ok=True)
    shutil.copy(shot, TEST_OUTPUT / name)


def _drawn_nodes(browser: Browser) -> dict[str, str]:
    """The drawn Mermaid graph's nodes (once it is drawn): label -> the status class it is coloured by."""
    browser.wait_for("!!document.querySelector('svg[aria-roledescription^=flowchart] g.node')", "the drawn graph")
    return browser.eval(
        "Object.fromEntries([...document.querySelectorAll('svg g.node')].map(g => "
        "[g.textContent.trim().replace(/\\s+/g, ' '), [...g.classList].filter(c => c !== 'node' && c !== 'default').join(' ')]))"
    )


# -- a replanned run ---------------------------------------------------------------------


def test_plan_v1_final_card_shows_the_failure_and_what_it_left_undone(
    browser: Browser, prefect_server: PrefectServer, replanned_run: Run, tmp_path: Path
) -> None:
    artifact = _latest_artifact(prefect_server, "plan-v1", replanned_run.run_key)
    assert artifact["description"].endswith("final state (superseded by v2)"), artifact["description"]
    assert ":::failed" in artifact["data"] and ":::skipped" in artifact["data"], artifact["data"]
    browser.goto(f"{prefect_server.url}/v2/artifacts/artifact/{artifact['id']}")
    text = browser.wait_text("Plan v1: final state (superseded by v2)", "Legend: completed")
    assert "failed: failed for good" in text and "skipped: never ran in this version" in text, text
    drawn = _drawn_nodes(browser)
    _shot(browser, tmp_path, "replanned-plan-v1.png")
    statuses = {label.split(":")[0]: status for label, status in drawn.items() if ":" in label}
    assert statuses == {"gather": "completed", "budget": "completed", "draft": "failed", "review": "skipped",
                        "tips": "completed"}, drawn
    assert {drawn.get(s) for s in ("completed", "failed", "skipped")} == {"completed", "failed", "skipped"}, drawn


def test_plan_v2_card_says_what_failed_why_and_what_changed(
    browser: Browser, prefect_server: PrefectServer, replanned_run: Run, tmp_path: Path
) -> None:
    artifact = _latest_artifact(prefect_server, "plan-v2", replanned_run.run_key)
    for part in ("**Failed in v1:** `draft`", ERROR, "**Action:** `retry_modified`", "`draft` → `v2.1`", REWRITTEN):
        assert part in artifact["data"], (part, artifact["data"])
    browser.goto(f"{prefect_server.url}/v2/artifacts/artifact/{artifact['id']}")
    browser.wait_text(
        "Failed in v1: draft", f"Error: HTTP 400 from the model: {ERROR}", "Action: retry_modified",
        "Changes from v1", "draft → v2.1", REASON,
    )
    drawn = _drawn_nodes(browser)
    _shot(browser, tmp_path, "replanned-plan-v2.png")
    assert drawn.get(f"v2.1: {REWRITTEN}") == "completed", drawn


def test_the_replan_subflow_page_has_its_card(
    browser: Browser, prefect_server: PrefectServer, replanned_run: Run, tmp_path: Path
) -> None:
    (subflow,) = prefect_server.flow_runs(parent_flow_run_id={"any_": [replanned_run.flow_run_id]})
    assert subflow["name"] == "replan v2 after draft", subflow["name"]
    artifact = _latest_artifact(prefect_server, "replan-v2", replanned_run.run_key)
    assert artifact["flow_run_id"] == subflow["id"], "the replan card belongs to the replan's own run"
    key = artifact_key("replan-v2", replanned_run.run_key)
    browser.goto(f"{prefect_server.url}/v2/runs/flow-run/{subflow['id']}?tab=Artifacts")
    browser.wait_text("replan v2 after draft", key)
    browser.goto(f"{prefect_server.url}/v2/artifacts/artifact/{artifact['id']}")
    text = browser.wait_text("Replan for plan v2", "Failed task: draft: Draft a day-by-day itinerary")
    _shot(browser, tmp_path, "replan-subflow-card.png")
    for part in (f"Error: HTTP 400 from the model: {ERROR}", f"Decision: retry_modified: {REASON}",
                 "New tasks in v2", REWRITTEN):
        assert part in text, (part, text)


@pytest.mark.parametrize("ui", ["v2", "classic"])
def test_a_task_run_page_shows_its_cache_key_and_retry_delay(
    ui: str, browser: Browser, prefect_server: PrefectServer, replanned_run: Run, tmp_path: Path
) -> None:
    task_runs = prefect_server.request(
        "POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [replanned_run.flow_run_id]}}}
    ).json()
    (gather,) = [t for t in task_runs if t["name"] == f"gather: {PLAN['tasks'][0]['description']}"]
    assert gather["cache_key"].startswith(f"planflow-node-{replanned_run.run_key}-gather-"), gather["cache_key"]
    assert gather["empirical_policy"]["retry_delay"] == 1.0, gather["empirical_policy"]
    prefix = "/v2" if ui == "v2" else ""
    browser.goto(f"{prefect_server.url}{prefix}/runs/task-run/{gather['id']}")
    text = browser.wait_text(f"Cache Key {gather['cache_key']}", "Retry Delay 1s", "Retry Jitter Factor 0.5")
    _shot(browser, tmp_path, f"task-run-{ui}.png")
    assert "NaN" not in text, text


# -- a paused run ------------------------------------------------------------------------

FIELD_HELP = (
    "approve: run it; edit: run plan_json instead; abort: stop the run",
    'With edit: the plan to run, as JSON {"tasks": [{"id", "description", "depends_on"}, ...]}; it starts as the current plan',
    "With abort: why (it becomes the run's error)",
)


@pytest.mark.parametrize("ui", ["v2", "classic"])
def test_the_pause_form_describes_its_fields_and_shows_the_plan_pretty_printed(
    ui: str, browser: Browser, prefect_server: PrefectServer, paused_run: Run, tmp_path: Path
) -> None:
    if ui == "v2":
        browser.goto(f"{prefect_server.url}/v2/runs/flow-run/{paused_run.flow_run_id}")
        browser.wait_text(paused_run.run_key, "Paused")
        browser.click("Open menu")
        browser.wait_text("Resume")
    else:
        browser.goto(f"{prefect_server.url}/runs/flow-run/{paused_run.flow_run_id}")
        browser.wait_text(paused_run.run_key, "Paused")
    browser.click("Resume")
    text = browser.wait_text("Resume Flow Run", "Review the plan before it runs", *FIELD_HELP)
    _shot(browser, tmp_path, f"pause-form-{ui}.png")
    fields = browser.eval("[...document.querySelectorAll('textarea')].map(e => e.value)")
    expected = json.dumps({"tasks": PLAN["tasks"]}, indent=2)
    assert expected in fields, fields  # the plan_json field, one line per key
    for task in PLAN["tasks"]:
        assert f"{task['id']}: {task['description']}" in text or task["description"] in text


def test_the_paused_run_goes_on_once_approved(prefect_server: PrefectServer, paused_run: Run) -> None:
    _resume(prefect_server, paused_run.flow_run_id, {"action": "approve"})
    final = prefect_server.wait_final(paused_run.flow_run_id, 180)
    assert final["state_type"] == "COMPLETED", final["state"]
