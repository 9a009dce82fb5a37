"""A real local Prefect server (started by scripts/prefect_server.sh), a flow run against
it through the CLI, then what a person sees in the UI, read back through Prefect's own
API client: the artifacts (plan as Mermaid graph and table, progress, results, answer)
and the task runs (named by node, tagged with run key and plan version)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from flows.artifacts import artifact_key
from flows.tasks import TASK_RUN_NAME_CHARS

from deploykit import PLAN, CompletedRun, PrefectServer

pytestmark = pytest.mark.slow


@dataclass
class Seen:
    flow_run: Any
    task_runs: list[Any]
    artifacts: list[Any]  # every version of every artifact of the flow run, oldest first

    def versions(self, key: str) -> list[Any]:
        return [a for a in self.artifacts if a.key == key]

    def latest(self, key: str) -> Any:
        versions = self.versions(key)
        assert versions, f"no artifact {key!r}; have {sorted({a.key for a in self.artifacts})}"
        return versions[-1]


@pytest.fixture(scope="module")
def seen(prefect_server: PrefectServer, completed_run: CompletedRun) -> Seen:
    """Everything the server knows about the run, through `prefect.client.orchestration.get_client`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flow_run_id = completed_run.flow_run["id"]
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api}):
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
                sort=ArtifactSort.CREATED_DESC,
            )
    return Seen(flow_run, task_runs, sorted(artifacts, key=lambda a: a.created))


def test_the_run_completed_under_its_run_key(seen: Seen, completed_run: CompletedRun) -> None:
    assert seen.flow_run.name == completed_run.run_key
    assert seen.flow_run.state.is_completed(), seen.flow_run.state
    assert completed_run.stdout.strip() == completed_run.answer


def test_task_runs_are_named_by_node_and_tagged(seen: Seen, completed_run: CompletedRun) -> None:
    nodes = {t["id"]: t["description"] for t in PLAN["tasks"]}
    node_runs = {tr.name.split(":", 1)[0]: tr for tr in seen.task_runs if ":" in tr.name}
    assert set(node_runs) == set(nodes), sorted(tr.name for tr in seen.task_runs)
    for node_id, task_run in node_runs.items():
        description = task_run.name.split(": ", 1)[1]
        assert description.rstrip("…") and nodes[node_id].startswith(description.rstrip("…")), task_run.name
        assert len(task_run.name) <= len(node_id) + 2 + TASK_RUN_NAME_CHARS, f"name not shortened: {task_run.name!r}"
        assert set(task_run.tags) >= {f"run:{completed_run.run_key}", "plan:v1"}, task_run.tags
        assert task_run.state.is_completed(), (task_run.name, task_run.state)
    # A user can filter by tag: the run key's tag selects exactly this run's nodes.
    tagged = [tr for tr in seen.task_runs if f"run:{completed_run.run_key}" in tr.tags]
    assert sorted(tr.name for tr in tagged) == sorted(tr.name for tr in node_runs.values())


def test_plan_artifact_is_a_mermaid_graph_and_a_table(seen: Seen, completed_run: CompletedRun) -> None:
    key = artifact_key("plan-v1", completed_run.run_key)
    versions = seen.versions(key)
    assert len(versions) >= 2, "the plan is published when made and again in its final state"
    first, final = versions[0].data, versions[-1].data
    for markdown in (first, final):
        assert "```mermaid" in markdown and "flowchart TD" in markdown
        for task in PLAN["tasks"]:
            assert task["id"] in markdown
            assert task["description"][:20] in markdown
    assert versions[-1].type == "markdown"
    # The table lists every node with its dependencies (markdown table rows start with '|').
    rows = [line for line in final.splitlines() if line.startswith("|")]
    for task in PLAN["tasks"]:
        assert any(task["id"] in row for row in rows), f"node {task['id']} missing from the plan table"
    edges = sum(len(t["depends_on"]) for t in PLAN["tasks"])
    assert final.count(" --> ") == edges, final
    # Node states are coloured: the final version shows every node completed, the first none.
    assert final.count(":::completed") == len(PLAN["tasks"]), final
    assert ":::completed" not in first


def test_results_table_has_one_row_per_node(seen: Seen, completed_run: CompletedRun) -> None:
    results = seen.latest(artifact_key("results", completed_run.run_key))
    assert results.type == "table"
    rows = json.loads(results.data) if isinstance(results.data, str) else results.data
    assert sorted(row["node"] for row in rows) == sorted(t["id"] for t in PLAN["tasks"])
    for row in rows:
        assert row["status"] == "completed" and row["attempts"] == 1 and row["cached"] is False, row
        assert row["tokens"] > 0 and row["duration_s"] is not None, row
        assert set(row) >= {"node", "status", "attempts", "cached", "tokens", "duration_s"}


def test_answer_and_progress_artifacts(seen: Seen, completed_run: CompletedRun) -> None:
    answer = seen.latest(artifact_key("answer", completed_run.run_key))
    assert answer.type == "markdown" and completed_run.answer in answer.data
    progress = seen.latest(artifact_key("progress", completed_run.run_key))
    assert progress.type == "progress" and float(progress.data) == 100.0
    # No repairs were needed, so no repair log.
    assert not seen.versions(artifact_key("repairs-v1", completed_run.run_key))


def test_artifacts_are_listed_under_their_keys(prefect_server: PrefectServer, completed_run: CompletedRun) -> None:
    """The Artifacts page lists the latest version of each key: the same REST API the UI uses."""
    keys = {artifact_key(kind, completed_run.run_key) for kind in ("plan-v1", "progress", "results", "answer")}
    r = prefect_server.request("POST", "/artifacts/latest/filter", json={"artifacts": {"key": {"any_": sorted(keys)}}})
    latest: list[dict[str, Any]] = r.json()
    assert {a["key"] for a in latest} == keys
    assert all(a["flow_run_id"] == completed_run.flow_run["id"] for a in latest)
