"""`planflow runs rerun KEY --from NODE [--description TEXT]` end to end: real CLI
subprocesses, real Prefect, the fake model server counting calls per node. Bad
requests are checked against the ledger before Prefect starts (exit 2, one line)."""

from __future__ import annotations

import getpass
import json
from collections import Counter

import pytest
from support.fake_openai import Reply

from planner.ledger import this_owner
from planner.models import Plan, Task

GOAL = "Answer through a diamond"
DIAMOND = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]


def calls_since(server, start: int) -> Counter:
    return Counter(c.key for c in server.calls[start:])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    assert lines[0].startswith("planflow: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


class TestRerun:
    def test_a_failed_run_reruns_then_a_finished_one_reruns_with_a_new_description(
        self, cli, fake_llm, write_plan, run_key, tmp_path, cli_ledger
    ):
        plan_path, _ = write_plan(DIAMOND)
        fake_llm.script("node:b", Reply(status=400, error_message="bad prompt"), "result of node:b")
        failed = cli.run(GOAL, "--plan", str(plan_path), "--run-key", run_key, "--no-replan", "--quiet")
        assert failed.returncode == 1, failed.stderr
        assert {n.node_id: n.status for n in cli_ledger.nodes(run_key)} == {
            "a": "completed", "b": "failed", "c": "completed", "d": "skipped",
        }

        # The failed run: b (failed) and d (never ran) run; a and c replay.
        start = len(fake_llm.calls)
        report_path = tmp_path / "rerun.json"
        result = cli.run("runs", "rerun", run_key, "--from", "b", "--quiet", "--report", str(report_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "result of node:d\n"
        assert calls_since(fake_llm, start) == {"node:b": 1, "node:d": 1}
        report = json.loads(report_path.read_text())
        assert report["status"] == "completed"
        latest = report["plan_versions"][-1]
        assert (latest["version"], latest["reason"], latest["action"], latest["requested_by"]) == (
            2, "rerun from b", "rerun", getpass.getuser(),
        )
        assert latest["rerun"]["nodes"] == ["b", "d"]
        assert {t["id"]: t["status"] for t in report["tasks"]} == {
            "a": "cached", "b": "completed", "c": "cached", "d": "completed",
        }

        # The finished run, from b with new text: the model sees it; upstream still replays.
        start = len(fake_llm.calls)
        result = cli.run("runs", "rerun", run_key, "--from", "b", "--description", "do b, with sources", "--quiet")
        assert result.returncode == 0, result.stderr
        assert calls_since(fake_llm, start) == {"node:b": 1, "node:d": 1}
        (b_call,) = [c for c in fake_llm.calls[start:] if c.key == "node:b"]
        assert "do b, with sources" in b_call.body["messages"][-1]["content"]
        versions = cli_ledger.plan_versions(run_key)
        assert [v.version for v in versions] == [1, 2, 3]
        assert Plan.model_validate_json(versions[-1].plan_json).by_id["b"].description == "do b, with sources"

        shown = cli.run("runs", "show", run_key)
        assert shown.returncode == 0, shown.stderr
        assert f"plan v3: rerun from b (rerun, asked by {getpass.getuser()})" in shown.stdout


@pytest.fixture
def recorded_run(cli_ledger, run_key):
    """A finished run in the ledger only (no Prefect): bad requests never get that far."""
    plan = Plan(tasks=tuple(Task(id=i, description=f"do {i}", depends_on=tuple(d)) for i, d in DIAMOND))
    cli_ledger.start_run(run_key, GOAL, flow_run_id="fr-1", model="m")
    cli_ledger.record_plan_version(run_key, 1, plan, (), reason="initial plan")
    cli_ledger.finish_run(run_key, status="completed", answer="done")
    return run_key


class TestBadRequests:
    def test_an_unknown_node_exits_2_naming_the_known_ids(self, cli, fake_llm, recorded_run, cli_ledger):
        result = cli.run("runs", "rerun", recorded_run, "--from", "zz", timeout=60)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert "'zz'" in line and "a, b, c, d" in line, line
        assert fake_llm.calls == [] and result.stdout == ""
        assert len(cli_ledger.plan_versions(recorded_run)) == 1 and cli_ledger.run(recorded_run).status == "completed"

    def test_a_node_of_an_older_version_says_which_version(self, cli, fake_llm, recorded_run, cli_ledger):
        replanned = Plan(tasks=(Task(id="a", description="do a"), Task(id="e", description="do e", depends_on=("a",))))
        cli_ledger.record_plan_version(recorded_run, 2, replanned, (), reason="a replan", action="replan")
        result = cli.run("runs", "rerun", recorded_run, "--from", "d", timeout=60)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert "'d' belongs to plan v1, not the current v2" in line and "a, e" in line, line

    def test_an_unknown_run_exits_2(self, cli, fake_llm):
        result = cli.run("runs", "rerun", "no-such-run", "--from", "a", timeout=60)
        assert result.returncode == 2, result.stderr
        assert "no run 'no-such-run'" in one_error_line(result)

    def test_a_running_run_is_not_rerun(self, cli, fake_llm, recorded_run, cli_ledger):
        cli_ledger.start_run(recorded_run, GOAL, flow_run_id="fr-2", model="m", owner=this_owner())  # alive: this process
        result = cli.run("runs", "rerun", recorded_run, "--from", "b", timeout=60)
        assert result.returncode == 1, result.stderr
        assert "is running now" in one_error_line(result)
        assert fake_llm.calls == [] and len(cli_ledger.plan_versions(recorded_run)) == 1

    def test_the_from_option_is_required(self, cli, fake_llm, recorded_run):
        result = cli.run("runs", "rerun", recorded_run, timeout=60)
        assert result.returncode == 2 and "--from" in result.stderr
