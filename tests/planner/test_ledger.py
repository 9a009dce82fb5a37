"""`planner.ledger` (SQLite in tmp_path) and `planner.report.build_report`."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest

from planner.ledger import Ledger
from planner.llm import LLMCall
from planner.models import Plan, Repair, Task
from planner.report import build_report

RUN = "trip-lisbon-abc123"
PLAN = Plan(
    tasks=(
        Task(id="t1", description="Find flights"),
        Task(id="t2", description="Find hotels"),
        Task(id="t3", description="Write itinerary", depends_on=("t1", "t2")),
    )
)
REPAIRS = (Repair(kind="dropped_self_loop", task_id="t3", detail="task 't3' depended on itself"),)


def started(ledger: Ledger, run_key: str = RUN) -> Ledger:
    ledger.start_run(run_key, "Plan a trip to Lisbon", flow_run_id="fr-1", model="fake-model")
    return ledger


def node(ledger: Ledger, node_id: str, run_key: str = RUN):
    return {n.node_id: n for n in ledger.nodes(run_key)}[node_id]


class TestRuns:
    def test_start_run_creates_running_run(self, ledger: Ledger) -> None:
        run = started(ledger).run(RUN)
        assert run is not None
        assert (run.run_key, run.goal, run.status, run.flow_run_id, run.model) == (
            RUN, "Plan a trip to Lisbon", "running", "fr-1", "fake-model",
        )
        assert run.finished_at is None and run.plan_version == 0

    def test_finish_run(self, ledger: Ledger) -> None:
        started(ledger).finish_run(RUN, status="completed", answer="Day 1: ...")
        run = ledger.run(RUN)
        assert run is not None
        assert (run.status, run.answer, run.error) == ("completed", "Day 1: ...", None)
        assert run.finished_at is not None

    def test_restart_is_a_resume_not_a_new_row(self, ledger: Ledger) -> None:
        started(ledger).finish_run(RUN, status="failed", error="node t2 failed")
        ledger.start_run(RUN, "ignored new goal text", flow_run_id="fr-2", model="fake-model")
        run = ledger.run(RUN)
        assert run is not None
        assert (run.status, run.error, run.finished_at, run.flow_run_id) == ("running", None, None, "fr-2")
        assert run.goal == "Plan a trip to Lisbon"
        assert [r.run_key for r in ledger.runs()] == [RUN]

    def test_each_claim_records_the_prefect_api_its_flow_run_lives_on(self, ledger: Ledger) -> None:
        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", prefect_api_url="http://127.0.0.1:4321/api")
        ledger.finish_run(RUN, status="failed", error="x")
        assert ledger.run(RUN).prefect_api_url == "http://127.0.0.1:4321/api"
        ledger.start_run(RUN, "goal", flow_run_id="fr-2", model="m", prefect_api_url="http://127.0.0.1:4200/api")
        assert ledger.run(RUN).prefect_api_url == "http://127.0.0.1:4200/api"

    def test_finish_unknown_run_is_a_no_op(self, ledger: Ledger) -> None:
        ledger.finish_run("nope", status="completed")
        assert ledger.run("nope") is None

    def test_persisted_in_a_real_sqlite_file(self, ledger: Ledger) -> None:
        started(ledger)
        path = ledger.url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT status FROM runs WHERE run_key = ?", (RUN,)).fetchone() == ("running",)
        ledger.check()


class TestPlanVersions:
    def test_records_version_and_pending_nodes(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, REPAIRS, reason="initial")
        [version] = ledger.plan_versions(RUN)
        assert (version.version, version.reason) == (1, "initial")
        assert json.loads(version.plan_json) == PLAN.to_json_dict()
        assert json.loads(version.repairs_json) == [r.model_dump() for r in REPAIRS]
        nodes = ledger.nodes(RUN)
        assert [n.node_id for n in nodes] == ["t1", "t2", "t3"]
        assert {n.status for n in nodes} == {"pending"}
        assert json.loads(node(ledger, "t3").depends_on_json) == ["t1", "t2"]
        assert ledger.run(RUN).plan_version == 1  # type: ignore[union-attr]

    def test_same_version_twice_is_idempotent(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, REPAIRS, reason="initial")
        ledger.node_attempt_started(RUN, "t1")
        ledger.record_plan_version(RUN, 1, PLAN, (), reason="resumed")
        [version] = ledger.plan_versions(RUN)
        assert version.reason == "initial" and json.loads(version.repairs_json) != []
        assert len(ledger.nodes(RUN)) == 3
        assert node(ledger, "t1").status == "running"  # progress is not reset by a resume

    def test_new_version_keeps_finished_nodes_and_moves_unfinished_ones(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, (), reason="initial")
        ledger.node_completed(RUN, "t1", result="done", prompt_tokens=1, completion_tokens=1, cached=False)
        ledger.node_failed(RUN, "t2", "HTTP 400")
        edited_t2 = Task(id="t2", description="Edited", depends_on=("t1",))
        v2 = Plan(tasks=(PLAN.tasks[0], edited_t2, PLAN.tasks[2], Task(id="t4", description="Book", depends_on=("t3",))))
        ledger.record_plan_version(RUN, 2, v2, (), reason="replan", action="skip", failed_node="t3")
        assert [v.version for v in ledger.plan_versions(RUN)] == [1, 2]
        assert [n.node_id for n in ledger.nodes(RUN)] == ["t1", "t2", "t3", "t4"]
        assert (node(ledger, "t1").plan_version, node(ledger, "t1").status) == (1, "completed")
        t2 = node(ledger, "t2")
        assert (t2.plan_version, t2.status, t2.error, t2.description) == (2, "pending", None, "Edited")
        assert node(ledger, "t4").plan_version == 2
        assert ledger.run(RUN).plan_version == 2  # type: ignore[union-attr]

    def test_runs_are_isolated(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, (), reason="initial")
        started(ledger, "other").record_plan_version("other", 1, PLAN, (), reason="initial")
        assert ledger.node_attempt_started(RUN, "t1") == 1  # its first attempt ever
        assert ledger.node_attempt_started(RUN, "t1") == 2
        assert ledger.node_attempt_started("other", "t2") == 1
        assert node(ledger, "t1", "other").attempts == 0
        assert len(ledger.plan_versions("other")) == 1


class TestNodes:
    @pytest.fixture
    def planned(self, ledger: Ledger) -> Ledger:
        started(ledger).record_plan_version(RUN, 1, PLAN, (), reason="initial")
        return ledger

    def test_attempt_started_increments_and_clears_error(self, planned: Ledger) -> None:
        planned.node_attempt_started(RUN, "t1")
        planned.node_failed(RUN, "t1", "HTTP 500 from the model")
        planned.node_attempt_started(RUN, "t1")
        n = node(planned, "t1")
        assert (n.attempts, n.status, n.error) == (2, "running", None)
        assert isinstance(n.started_at, datetime)

    def test_completed_records_result_and_tokens(self, planned: Ledger) -> None:
        planned.node_attempt_started(RUN, "t1")
        planned.node_completed(RUN, "t1", result="TAP 9am", prompt_tokens=12, completion_tokens=5, cached=False)
        n = node(planned, "t1")
        assert (n.status, n.cached, n.result, n.prompt_tokens, n.completion_tokens) == (
            "completed", False, "TAP 9am", 12, 5,
        )
        assert n.finished_at is not None

    def test_cached_completion_keeps_paid_tokens_and_time(self, planned: Ledger) -> None:
        planned.node_completed(RUN, "t1", result="TAP 9am", prompt_tokens=12, completion_tokens=5, cached=False)
        first_finish = node(planned, "t1").finished_at
        planned.node_completed(RUN, "t1", result="TAP 9am", prompt_tokens=0, completion_tokens=0, cached=True)
        n = node(planned, "t1")
        assert (n.status, n.cached, n.prompt_tokens, n.completion_tokens) == ("cached", True, 12, 5)
        assert n.finished_at == first_finish

    def test_failed_and_skipped(self, planned: Ledger) -> None:
        planned.node_failed(RUN, "t1", "HTTP 400 from the model")
        planned.node_skipped(RUN, "t3", "dependency t1 failed")
        assert (node(planned, "t1").status, node(planned, "t1").error) == ("failed", "HTTP 400 from the model")
        assert (node(planned, "t3").status, node(planned, "t3").error) == ("skipped", "dependency t1 failed")

    def test_unknown_node_updates_are_no_ops(self, planned: Ledger) -> None:
        planned.node_attempt_started(RUN, "ghost")
        planned.node_failed("no-run", "t1", "x")
        assert "ghost" not in {n.node_id for n in planned.nodes(RUN)}
        assert node(planned, "t1").status == "pending"


class TestLLMTotals:
    def test_empty(self, ledger: Ledger) -> None:
        assert ledger.llm_totals(RUN) == {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def test_sums_per_run(self, ledger: Ledger) -> None:
        ledger.record_llm_call(RUN, LLMCall("plan", None, 100, 40, 0.5))
        ledger.record_llm_call(RUN, LLMCall("node", "t1", 30, 7, 0.2))
        ledger.record_llm_call(RUN, LLMCall("node", "t2", 0, 0, 0.1, error="HTTP 429 from the model"))
        ledger.record_llm_call("other", LLMCall("node", "t1", 999, 999, 0.1))
        assert ledger.llm_totals(RUN) == {"calls": 3, "prompt_tokens": 130, "completion_tokens": 47}


class TestReport:
    @pytest.fixture
    def report(self, ledger: Ledger) -> dict:
        started(ledger).record_plan_version(RUN, 1, PLAN, REPAIRS, reason="initial")
        ledger.node_attempt_started(RUN, "t1")
        ledger.node_completed(RUN, "t1", result="flights", prompt_tokens=10, completion_tokens=4, cached=False)
        ledger.node_attempt_started(RUN, "t2")
        ledger.node_failed(RUN, "t2", "HTTP 400 from the model")
        # t3 never started: still pending
        ledger.record_llm_call(RUN, LLMCall("node", "t1", 10, 4, 0.1))
        ledger.record_llm_call(RUN, LLMCall("node", "t2", 0, 0, 0.1, error="HTTP 400 from the model"))
        ledger.finish_run(RUN, status="failed", error="node t2 failed")
        return build_report(ledger, RUN)

    def test_top_level_shape(self, report: dict) -> None:
        assert {"run_key", "flow_run_id", "status", "answer", "plan_versions", "tasks", "llm"} <= set(report)
        assert (report["run_key"], report["flow_run_id"], report["status"], report["answer"]) == (
            RUN, "fr-1", "failed", None,
        )
        assert report["llm"] == {"calls": 2, "prompt_tokens": 10, "completion_tokens": 4}
        json.dumps(report)  # the report is written as JSON: every value must serialise

    def test_plan_versions_shape(self, report: dict) -> None:
        [version] = report["plan_versions"]
        assert {"version", "reason", "tasks", "repairs"} <= set(version)
        assert (version["version"], version["reason"]) == (1, "initial")
        assert version["tasks"] == PLAN.to_json_dict()["tasks"]
        assert version["repairs"] == [
            {"kind": "dropped_self_loop", "task_id": "t3", "detail": "task 't3' depended on itself"}
        ]

    def test_tasks_shape_and_statuses(self, report: dict) -> None:
        keys = {"id", "description", "depends_on", "status", "attempts", "cached",
                "started_at", "finished_at", "result", "error"}
        assert all(keys <= set(t) for t in report["tasks"])
        by_id = {t["id"]: t for t in report["tasks"]}
        assert [t["id"] for t in report["tasks"]] == ["t1", "t2", "t3"]
        t1, t2, t3 = by_id["t1"], by_id["t2"], by_id["t3"]
        assert (t1["status"], t1["attempts"], t1["cached"], t1["result"]) == ("completed", 1, False, "flights")
        assert isinstance(t1["started_at"], str) and datetime.fromisoformat(t1["finished_at"])
        assert (t2["status"], t2["error"]) == ("failed", "HTTP 400 from the model")
        assert t3["depends_on"] == ["t1", "t2"] and t3["description"] == "Write itinerary"

    def test_pending_node_reported_as_skipped(self, report: dict) -> None:
        t3 = next(t for t in report["tasks"] if t["id"] == "t3")
        assert (t3["status"], t3["attempts"], t3["started_at"], t3["finished_at"]) == ("skipped", 0, None, None)

    def test_running_node_and_running_run_reported_as_not_completed(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, (), reason="initial")
        ledger.node_attempt_started(RUN, "t1")
        report = build_report(ledger, RUN)
        assert report["status"] == "failed"
        assert {t["id"]: t["status"] for t in report["tasks"]} == {"t1": "skipped", "t2": "skipped", "t3": "skipped"}

    def test_completed_run_with_cached_node(self, ledger: Ledger) -> None:
        started(ledger).record_plan_version(RUN, 1, PLAN, (), reason="initial")
        for nid in ("t1", "t2", "t3"):
            ledger.node_completed(RUN, nid, result=nid.upper(), prompt_tokens=1, completion_tokens=1, cached=nid == "t2")
        ledger.finish_run(RUN, status="completed", answer="final")
        report = build_report(ledger, RUN)
        assert (report["status"], report["answer"]) == ("completed", "final")
        assert [(t["status"], t["cached"]) for t in report["tasks"]] == [
            ("completed", False), ("cached", True), ("completed", False),
        ]

    def test_unknown_run(self, ledger: Ledger) -> None:
        with pytest.raises(KeyError):
            build_report(ledger, "nope")


class TestDecisions:
    """A pause for a person is kept when asked and again when answered."""

    def test_a_pause_waits_until_answered_then_says_who_what_when(self, ledger: Ledger) -> None:
        started(ledger)
        asked = ledger.pause_asked(RUN, kind="failure", pause_key="failure-t2-v1", plan_version=1,
                                   question="task 't2' failed", node_id="t2")
        assert ledger.open_pause(RUN).id == asked
        ledger.pause_answered(asked, action="replan", detail="be brief", decided_by="alice")
        assert ledger.open_pause(RUN) is None
        [entry] = build_report(ledger, RUN)["decisions"]
        assert {k: entry[k] for k in ("kind", "plan_version", "node", "action", "detail", "decided_by")} == {
            "kind": "failure", "plan_version": 1, "node": "t2", "action": "replan", "detail": "be brief",
            "decided_by": "alice",
        }
        assert entry["decided_at"] >= entry["asked_at"]

    def test_a_new_pause_closes_one_a_killed_process_left_open(self, ledger: Ledger) -> None:
        started(ledger)
        left = ledger.pause_asked(RUN, kind="approval", pause_key="approve-plan-v1", plan_version=1, question="q")
        again = ledger.pause_asked(RUN, kind="approval", pause_key="approve-plan-v1", plan_version=1, question="q")
        assert ledger.open_pause(RUN).id == again != left
        assert [(d.id, d.action) for d in ledger.decisions(RUN)] == [(left, "unanswered"), (again, None)]


class TestRunClaims:
    """One run key is executed by one live process at a time."""

    @staticmethod
    def dead_local_owner() -> str:
        import socket
        import subprocess
        import sys

        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        return f"{socket.gethostname()}:{proc.pid}"

    def test_a_live_owner_keeps_the_run(self, ledger: Ledger) -> None:
        from planner.errors import RunInProgressError

        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", owner="elsewhere:1")
        with pytest.raises(RunInProgressError, match="already running \\(flow run fr-1"):
            ledger.start_run(RUN, "goal", flow_run_id="fr-2", model="m", owner="here:2")

    def test_a_dead_local_owner_is_taken_over_at_once(self, ledger: Ledger) -> None:
        dead = self.dead_local_owner()
        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", owner=dead)
        assert [r.run_key for r in ledger.stale_runs()] == [RUN]
        previous = ledger.start_run(RUN, "goal", flow_run_id="fr-2", model="m", owner="here:2")
        assert previous is not None and previous.flow_run_id == "fr-1"
        run = ledger.run(RUN)
        assert (run.owner, run.flow_run_id, run.status) == ("here:2", "fr-2", "running")

    def test_a_remote_owner_with_a_stale_heartbeat_is_taken_over(self, ledger: Ledger) -> None:
        from datetime import timedelta

        from sqlalchemy import update

        from planner.ledger import RunRecord, utcnow

        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", owner="otherhost:7")
        with ledger.engine.begin() as conn:
            conn.execute(update(RunRecord).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        assert ledger.start_run(RUN, "goal", flow_run_id="fr-2", model="m", owner="here:2") is not None

    def test_a_finished_run_is_resumed_without_complaint(self, ledger: Ledger) -> None:
        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", owner="elsewhere:1")
        ledger.finish_run(RUN, status="failed", error="boom")
        assert ledger.start_run(RUN, "goal", flow_run_id="fr-2", model="m", owner="here:2") is None
        assert ledger.run(RUN).owner == "here:2"

    def test_mark_crashed_only_touches_running_runs(self, ledger: Ledger) -> None:
        ledger.start_run(RUN, "goal", flow_run_id="fr-1", model="m", owner=self.dead_local_owner())
        ledger.mark_crashed(RUN, "process gone")
        assert (ledger.run(RUN).status, ledger.run(RUN).error) == ("crashed", "process gone")
        ledger.finish_run(RUN, status="completed", answer="a")
        ledger.mark_crashed(RUN, "again")
        assert ledger.run(RUN).status == "completed"


class TestMigration:
    def test_a_ledger_from_an_older_version_gains_the_new_columns(self, tmp_path) -> None:
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:  # the runs table as the first release made it
            conn.execute(
                "CREATE TABLE runs (run_key VARCHAR PRIMARY KEY, goal VARCHAR NOT NULL, status VARCHAR NOT NULL,"
                " flow_run_id VARCHAR, model VARCHAR, answer VARCHAR, error VARCHAR, plan_version INTEGER NOT NULL,"
                " created_at DATETIME NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME)"
            )
            conn.execute(
                "INSERT INTO runs VALUES ('old', 'g', 'completed', 'fr', 'm', 'a', NULL, 1,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', NULL)"
            )
        ledger = Ledger(f"sqlite:///{path}")
        assert ledger.run("old").answer == "a" and ledger.run("old").owner is None
        ledger.start_run("old", "g", flow_run_id="fr2", model="m", owner="here:1")
        assert ledger.run("old").owner == "here:1"


class TestCancel:
    """A cancel keeps finished nodes, marks running ones, and says who asked and when."""

    @pytest.fixture
    def running(self, ledger: Ledger) -> Ledger:
        started(ledger).record_plan_version(RUN, 1, PLAN, REPAIRS, reason="initial")
        ledger.node_attempt_started(RUN, "t1")
        ledger.node_completed(RUN, "t1", result="flights", prompt_tokens=10, completion_tokens=4, cached=False)
        ledger.node_attempt_started(RUN, "t2")
        return ledger

    def test_cancel_run_marks_running_nodes_only(self, running: Ledger) -> None:
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        assert running.cancel_run(RUN, by="ctrl-c", at=at)
        run = running.run(RUN)
        assert (run.status, run.cancelled_by, run.owner) == ("cancelled", "ctrl-c", None)
        assert run.cancelled_at.replace(tzinfo=timezone.utc) == at
        assert run.finished_at is not None
        assert (node(running, "t1").status, node(running, "t1").result) == ("completed", "flights")
        assert (node(running, "t2").status, node(running, "t2").error) == ("cancelled", "cancelled by ctrl-c")
        assert node(running, "t3").status == "pending"
        assert not running.cancel_run(RUN, by="again")  # only a running run
        assert running.run(RUN).cancelled_by == "ctrl-c"

    def test_a_request_names_who_asked(self, running: Ledger) -> None:
        assert running.request_cancel(RUN, "alice")
        assert running.run(RUN).status == "running"  # only asked, not yet done
        running.cancel_run(RUN, by="prefect")
        assert running.run(RUN).cancelled_by == "alice"

    def test_flow_run_must_match(self, running: Ledger) -> None:
        assert not running.cancel_run(RUN, by="prefect", flow_run_id="another-flow-run")
        assert running.run(RUN).status == "running"
        assert running.cancel_run(RUN, by="prefect", flow_run_id="fr-1")

    def test_no_request_for_a_run_that_is_not_running(self, running: Ledger) -> None:
        running.finish_run(RUN, status="completed", answer="a")
        assert not running.request_cancel(RUN, "alice")
        assert running.run(RUN).cancelled_by is None

    def test_a_request_that_came_too_late_is_dropped(self, running: Ledger) -> None:
        running.request_cancel(RUN, "alice")
        running.finish_run(RUN, status="completed", answer="a")
        assert (running.run(RUN).cancelled_by, running.run(RUN).cancelled_at) == (None, None)

    def test_a_resume_clears_the_cancel(self, running: Ledger) -> None:
        running.cancel_run(RUN, by="alice")
        running.start_run(RUN, "Plan a trip to Lisbon", flow_run_id="fr-2", model="fake-model")
        run = running.run(RUN)
        assert (run.status, run.cancelled_by, run.cancelled_at) == ("running", None, None)

    def test_report_says_cancelled_with_who_and_when(self, running: Ledger) -> None:
        running.cancel_run(RUN, by="alice", at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
        report = build_report(running, RUN)
        assert (report["status"], report["cancelled_by"]) == ("cancelled", "alice")
        assert report["cancelled_at"].startswith("2026-01-02T03:04:05")
        assert {t["id"]: t["status"] for t in report["tasks"]} == {"t1": "completed", "t2": "cancelled", "t3": "skipped"}

    def test_report_of_a_run_not_cancelled_has_no_canceller(self, running: Ledger) -> None:
        running.finish_run(RUN, status="failed", error="boom")
        report = build_report(running, RUN)
        assert (report["status"], report["cancelled_by"], report["cancelled_at"]) == ("failed", None, None)
