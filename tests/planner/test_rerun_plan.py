"""`planner.rerun` and what it touches in the core: the rerun plan, each node's rerun
version, the keys it changes (and the ones it must not), the ledger's record of it,
the tool-call identity and the report."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import pytest

from planner.cache_keys import idempotency_key, node_cache_key, synthesis_cache_key, tool_call_cache_key, turn_cache_key
from planner.errors import UserInputError
from planner.ledger import Ledger
from planner.models import Plan, Task
from planner.report import build_report
from planner.rerun import RerunError, plan_rerun, rerun_versions, who_asked

RUN = "diamond-run"
DIAMOND = Plan(
    tasks=(
        Task(id="a", description="do a"),
        Task(id="b", description="do b", depends_on=("a",)),
        Task(id="c", description="do c", depends_on=("a",)),
        Task(id="d", description="do d", depends_on=("b", "c")),
    )
)


@dataclass
class Version:
    version: int
    plan_json: str
    rerun_json: str | None = None


def v(version: int, plan: Plan, rerun_nodes: list[str] | None = None) -> Version:
    rerun = json.dumps({"from": rerun_nodes[0], "nodes": rerun_nodes}) if rerun_nodes else None
    return Version(version, plan.model_dump_json(), rerun)


class TestPlanRerun:
    def test_the_node_and_its_descendants_in_plan_order(self) -> None:
        rerun = plan_rerun([v(1, DIAMOND)], "b")
        assert (rerun.node, rerun.nodes) == ("b", ("b", "d"))
        assert rerun.plan == DIAMOND and not rerun.description_changed
        assert plan_rerun([v(1, DIAMOND)], "a").nodes == ("a", "b", "c", "d")
        assert plan_rerun([v(1, DIAMOND)], "d").nodes == ("d",)

    def test_a_new_description_changes_that_task_only(self) -> None:
        rerun = plan_rerun([v(1, DIAMOND)], "b", "  do b, but better  ")
        assert rerun.plan.by_id["b"].description == "do b, but better"
        assert rerun.description_changed
        assert [t for t in rerun.plan.tasks if t.id != "b"] == [t for t in DIAMOND.tasks if t.id != "b"]
        assert rerun.plan.by_id["b"].depends_on == ("a",)

    def test_the_same_description_is_no_change(self) -> None:
        assert not plan_rerun([v(1, DIAMOND)], "b", "do b").description_changed

    def test_an_unknown_node_names_the_known_ids(self) -> None:
        with pytest.raises(RerunError) as caught:
            plan_rerun([v(1, DIAMOND)], "zz", run_key="run 'k'")
        message = str(caught.value)
        assert "'zz'" in message and "a, b, c, d" in message and "\n" not in message
        assert isinstance(caught.value, UserInputError), "bad input: the CLI exits 2"

    def test_a_node_of_an_older_version_says_which(self) -> None:
        replanned = Plan(tasks=(Task(id="a", description="do a"), Task(id="b2", description="b again", depends_on=("a",))))
        with pytest.raises(RerunError, match=r"'b' belongs to plan v1, not the current v2; rerun one of its tasks: a, b2"):
            plan_rerun([v(1, DIAMOND), v(2, replanned)], "b")

    def test_no_plan_and_an_empty_description(self) -> None:
        with pytest.raises(RerunError, match="no plan yet"):
            plan_rerun([], "b")
        with pytest.raises(RerunError, match="description of task 'b' is empty"):
            plan_rerun([v(1, DIAMOND)], "b", "   ")


class TestRerunVersions:
    def test_the_latest_invalidating_version_wins(self) -> None:
        versions = [v(1, DIAMOND), v(2, DIAMOND, ["b", "d"]), v(3, DIAMOND), v(4, DIAMOND, ["d"])]
        assert rerun_versions(versions) == {"b": 2, "d": 4}
        assert rerun_versions(reversed(versions)) == {"b": 2, "d": 4}

    def test_no_rerun_no_versions(self) -> None:
        assert rerun_versions([v(1, DIAMOND), v(2, DIAMOND)]) == {}

    def test_who_asked(self) -> None:
        assert who_asked(True) == "ui"
        assert who_asked(False) not in ("", "ui")


NODE = dict(run_key="r", node_id="b", goal="g", description="do b", model="m", prompt_version="p", upstream_results={"a": "A"})
TURN = dict(run_key="r", node_id="b", step=1, messages=[{"role": "user", "content": "hi"}], tools=["calc"], model="m")
CALL = dict(run_key="r", node_id="b", step=1, index=0, tool="calc", arguments="{}")
SYNTH = dict(run_key="r", goal="g", model="m", prompt_version="p", sink_results={"d": "D"})


class TestKeys:
    # Computed by the code before reruns existed: a run made then must still resume from its cache.
    BEFORE = {
        "node": "planflow-node-r-b-3d1bca03da15ea1a77592b6f5a69a538",
        "turn": "planflow-turn-r-b-s1-525d0adc1f1cea27c104ce68bf8a1295",
        "tool": "planflow-tool-r-b-s1c0-c779343398db979609977f2d7882c8f0",
        "idempotency": "planflow-d05f98924d5f35abcddd36a0c194682f",
        "synthesis": "planflow-answer-r-7ed2f9f68a9d274dc9022856f1d7536c",
    }

    def keys(self, rerun_version: int | None) -> dict[str, str]:
        extra = {} if rerun_version is None else {"rerun_version": rerun_version}
        return {
            "node": node_cache_key(**NODE, **extra),
            "turn": turn_cache_key(**TURN, **extra),
            "tool": tool_call_cache_key(**CALL, **extra),
            "idempotency": idempotency_key(run_key="r", node_id="b", step=1, index=0, **extra),
            "synthesis": synthesis_cache_key(**SYNTH, **extra),
        }

    def test_rerun_version_0_keeps_every_key_as_it_was(self) -> None:
        assert self.keys(None) == self.BEFORE
        assert self.keys(0) == self.BEFORE

    def test_each_rerun_version_gives_new_keys(self) -> None:
        second, third = self.keys(2), self.keys(3)
        for kind, before in self.BEFORE.items():
            assert len({before, second[kind], third[kind]}) == 3, kind
        assert second["node"].startswith("planflow-node-r-b-"), "the readable prefix stays"


def _planned(ledger: Ledger) -> Ledger:
    ledger.start_run(RUN, "a diamond", flow_run_id="fr-1", model="m")
    ledger.record_plan_version(RUN, 1, DIAMOND, (), reason="initial plan")
    for n in "abcd":
        ledger.node_attempt_started(RUN, n)
        ledger.node_completed(RUN, n, result=f"old {n}", prompt_tokens=5, completion_tokens=7, cached=False)
    ledger.finish_run(RUN, status="completed", answer="old d")
    return ledger


class TestLedger:
    def test_record_rerun_resets_the_rerun_nodes_and_keeps_their_results(self, ledger: Ledger) -> None:
        rerun = plan_rerun(_planned(ledger).plan_versions(RUN), "b", "do b better")
        ledger.record_rerun(RUN, 2, rerun.plan, node="b", nodes=rerun.nodes, requested_by="alice", flow_run_id="fr-2")
        nodes = {n.node_id: n for n in ledger.nodes(RUN)}
        assert {k: (n.status, n.plan_version, n.result, n.attempts) for k, n in nodes.items()} == {
            "a": ("completed", 1, "old a", 1),
            "b": ("pending", 2, None, 0),
            "c": ("completed", 1, "old c", 1),
            "d": ("pending", 2, None, 0),
        }
        assert nodes["b"].description == "do b better"
        latest = ledger.plan_versions(RUN)[-1]
        assert (latest.version, latest.reason, latest.action, latest.requested_by) == (2, "rerun from b", "rerun", "alice")
        assert json.loads(latest.rerun_json) == {
            "from": "b", "nodes": ["b", "d"], "flow_run_id": "fr-2",
            "previous_results": {"b": "old b", "d": "old d"},
        }
        assert ledger.run(RUN).plan_version == 2
        assert rerun_versions(ledger.plan_versions(RUN)) == {"b": 2, "d": 2}

    def test_recording_the_same_rerun_twice_changes_nothing(self, ledger: Ledger) -> None:
        rerun = plan_rerun(_planned(ledger).plan_versions(RUN), "b")
        ledger.record_rerun(RUN, 2, rerun.plan, node="b", nodes=rerun.nodes, requested_by="alice", flow_run_id="fr-2")
        ledger.node_completed(RUN, "b", result="new b", prompt_tokens=1, completion_tokens=1, cached=False)
        ledger.record_rerun(RUN, 2, rerun.plan, node="b", nodes=rerun.nodes, requested_by="alice", flow_run_id="fr-2")
        assert {n.node_id: n.result for n in ledger.nodes(RUN)}["b"] == "new b"
        assert len(ledger.plan_versions(RUN)) == 2

    def test_a_rerun_tool_call_is_a_row_of_its_own(self, ledger: Ledger) -> None:
        place = (RUN, "b", 1, 0)
        ledger.tool_call_started(*place, tool="send", arguments="{}", idempotent=False)
        ledger.tool_call_finished(*place, result="sent once", error=None)
        assert ledger.tool_call(*place, rerun_version=2) is None, "the rerun must not find the earlier call done"
        ledger.tool_call_started(*place, tool="send", arguments="{}", idempotent=False, rerun_version=2)
        ledger.tool_call_finished(*place, result="sent twice", error=None, rerun_version=2)
        assert ledger.tool_call(*place).result == "sent once"
        assert ledger.tool_call(*place, rerun_version=2).result == "sent twice"
        assert [(c.rerun_version, c.result) for c in ledger.tool_calls(RUN, "b")] == [(0, "sent once"), (2, "sent twice")]

    def test_the_report_shows_the_rerun_version_and_each_node_s_latest_calls(self, ledger: Ledger) -> None:
        rerun = plan_rerun(_planned(ledger).plan_versions(RUN), "b")
        ledger.tool_call_started(RUN, "b", 1, 0, tool="send", arguments="{}", idempotent=False)
        ledger.tool_call_finished(RUN, "b", 1, 0, result="first", error=None)
        ledger.record_rerun(RUN, 2, rerun.plan, node="b", nodes=rerun.nodes, requested_by="alice", flow_run_id="fr-2")
        ledger.tool_call_started(RUN, "b", 1, 0, tool="send", arguments="{}", idempotent=False, rerun_version=2)
        ledger.tool_call_finished(RUN, "b", 1, 0, result="second", error=None, rerun_version=2)
        report = build_report(ledger, RUN)
        latest = report["plan_versions"][-1]
        assert (latest["version"], latest["reason"], latest["action"], latest["requested_by"]) == (
            2, "rerun from b", "rerun", "alice",
        )
        assert latest["rerun"]["nodes"] == ["b", "d"]
        assert report["plan_versions"][0]["rerun"] is None
        tasks = {t["id"]: t for t in report["tasks"]}
        assert [c["result"] for c in tasks["b"]["tool_calls"]] == ["second"]
        assert {k: t["status"] for k, t in tasks.items()} == {"a": "completed", "b": "skipped", "c": "completed", "d": "skipped"}


class TestMigration:
    def test_a_ledger_from_before_reruns_gets_the_wider_tool_call_identity(self, tmp_path) -> None:
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:  # tool_calls as the release before reruns made it
            conn.executescript(
                """
                CREATE TABLE tool_calls (
                    id INTEGER NOT NULL PRIMARY KEY, run_key VARCHAR NOT NULL, node_id VARCHAR NOT NULL,
                    step INTEGER NOT NULL, call_index INTEGER NOT NULL, tool VARCHAR NOT NULL,
                    arguments VARCHAR NOT NULL, idempotent BOOLEAN NOT NULL, result VARCHAR, error VARCHAR,
                    started_at DATETIME NOT NULL, finished_at DATETIME, cached BOOLEAN NOT NULL,
                    UNIQUE (run_key, node_id, step, call_index)
                );
                CREATE INDEX ix_tool_calls_run_key ON tool_calls (run_key);
                INSERT INTO tool_calls VALUES (1, 'old', 'b', 1, 0, 'send', '{}', 0, 'sent', NULL,
                                               '2026-01-01 00:00:00', '2026-01-01 00:00:01', 0);
                """
            )
        for _ in range(2):  # a second open finds it done
            ledger = Ledger(f"sqlite:///{path}")
            try:
                (old,) = ledger.tool_calls("old")
                assert (old.node_id, old.rerun_version, old.result) == ("b", 0, "sent")
                assert ledger.tool_call("old", "b", 1, 0).result == "sent"
            finally:
                ledger.close()
        ledger = Ledger(f"sqlite:///{path}")
        try:
            ledger.tool_call_started("old", "b", 1, 0, tool="send", arguments="{}", idempotent=False, rerun_version=2)
            assert [c.rerun_version for c in ledger.tool_calls("old")] == [0, 2]
        finally:
            ledger.close()
        with sqlite3.connect(path) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "tool_calls_before_reruns" not in names and "ix_tool_calls_run_key" in names
