"""Secrets: with OPENAI_API_KEY set to a marker, successful and failing runs, including
model errors that echo the key (as OpenAI's 401 does, and as a proxy echoing the
Authorization header would), leave the marker nowhere: not on stdout or stderr (with
Prefect's logs on), not in a report, not in any ledger row, not in Prefect (logs,
artifacts, states, events: its whole database) nor in persisted results, nor in any
exception a caller of the flow gets."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
from faultkit import exception_chain_text, files_leaking, leaks_in_bytes, plan_answer, sqlite_rows
from support.fake_openai import Reply
from support.flows import run_flow

from planner.errors import RunFailedError


def _marker() -> str:
    return f"sk-MARKER-{uuid.uuid4().hex}"


def _echoing_faults(fake_llm, marker: str) -> None:
    fake_llm.script("plan", plan_answer(("a", []), ("b", ["a"])))
    fake_llm.script("node:a", Reply(status=500, error_message=f"upstream rejected Authorization: Bearer {marker}"),
                    "result of node:a")
    fake_llm.script("node:b", Reply(status=401, error_message=f"Incorrect API key provided: {marker}. You can "
                                                              "find your API key at https://example.invalid"),
                    "result of node:b")
    fake_llm.script("replan", Reply(status=400, error_message=f"invalid_api_key: {marker} (header authorization)"))


async def _prefect_artifacts_text() -> str:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        artifacts = await client.read_artifacts(limit=200)
    return "\n".join(f"{a.key} {a.description} {a.data}" for a in artifacts)


@pytest.mark.slow
def test_the_api_key_never_leaks_from_cli_runs(cli, fake_llm, run_key, tmp_path):
    marker = _marker()
    home = tmp_path / "planflow-home"
    env = {"OPENAI_API_KEY": marker, "PLANFLOW_HOME": str(home)}
    _echoing_faults(fake_llm, marker)
    args = ("Keep my key", "--run-key", run_key, "--verbose", "--max-retries", "1")

    failing = cli.run(*args, "--report", str(tmp_path / "failed.json"), env=env)
    succeeding = cli.run(*args, "--report", str(tmp_path / "completed.json"), env=env)

    assert failing.returncode == 1, failing.stderr[-3000:]
    assert succeeding.returncode == 0 and succeeding.stdout.strip() == "result of node:b", succeeding.stderr[-3000:]
    sent = [c for c in fake_llm.calls if c.headers.get("authorization") == f"Bearer {marker}"]
    assert len(sent) == len(fake_llm.calls) >= 6, "the marker is the key the runs really used"
    assert any(c.status in (400, 401, 500) for c in fake_llm.calls), "the echoing errors really happened"

    leaks = []
    for name, result in (("failing", failing), ("succeeding", succeeding)):
        for stream in ("stdout", "stderr"):
            if marker in getattr(result, stream):
                leaks.append(f"{name} run {stream}")
    leaks += files_leaking(marker, [tmp_path / "failed.json", tmp_path / "completed.json"])
    rows = sqlite_rows(home / "planflow.db")
    assert rows["llm_calls"] and rows["nodes"] and rows["runs"], "the ledger was written"
    for table, table_rows in rows.items():
        if marker in repr(table_rows):
            leaks.append(f"ledger table {table}")
    leaks += files_leaking(marker, [home])  # the ledger files themselves, WAL included
    prefect_home = Path(os.environ["PREFECT_HOME"])
    leaks += files_leaking(marker, [prefect_home])  # Prefect's database (logs, states, events) and results
    if marker in asyncio.run(_prefect_artifacts_text()):
        leaks.append("a Prefect artifact")
    assert leaks == [], f"the API key leaked into: {leaks}"


def test_the_api_key_never_leaks_into_exceptions_or_state(fake_llm, run_key, ledger, monkeypatch):
    marker = _marker()
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    fake_llm.script("plan", plan_answer(("a", [])))
    fake_llm.script("node:a", Reply(status=401, error_message=f"Incorrect API key provided: {marker}; "
                                                              f"Authorization: Bearer {marker}"))
    state, error = run_flow("Keep my key in process", run_key=run_key, replan_on_failure=False)

    assert isinstance(error, RunFailedError), repr(error)
    assert "HTTP 401" in str(error), "the error still says what happened"
    assert marker not in exception_chain_text(error)
    assert marker not in f"{state!r} {state.message}"
    run = ledger.run(run_key)
    assert marker not in repr(run) and all(marker not in repr(n) for n in ledger.nodes(run_key))
    assert not leaks_in_bytes(repr(error.__reduce__()).encode(), marker)


def test_the_scanner_is_not_blind(tmp_path):
    """The scans above would see the marker raw, inside a pickled result stored as base64,
    and inside a SQLite page."""
    import base64
    import pickle
    import sqlite3

    marker = _marker()
    (tmp_path / "result.json").write_text(json.dumps(
        {"result": base64.b64encode(pickle.dumps(RunFailedError(f"x {marker} y"))).decode()}))
    assert files_leaking(marker, [tmp_path / "result.json"])
    db = tmp_path / "l.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.execute("INSERT INTO t VALUES (?)", (f"error: {marker}",))
    assert files_leaking(marker, [tmp_path]) and marker in repr(sqlite_rows(db))
