"""The benchmarks still run: `python -m benchmarks all --quick` once, then every result file checked.

One subprocess for the whole suite of benchmarks (it starts Prefect, the CLI and
the embedded model itself, in its own temporary homes); the figures are not
judged here, only that each benchmark produced them and that they are sane.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMES = ("context_tokens", "overhead", "makespan", "dispatch", "hop_profile", "resume", "startup", "plan_quality")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench-quick")
    # The session's Prefect database, migrated by the tests before (if any ran): a copy
    # spares the benchmarks a fresh database's 20-50 s migration.
    seed = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "all", "--quick", "--out", str(out),
         *(["--prefect-db", str(seed)] if seed.is_file() else [])],
        cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = {}
    for name in NAMES:
        assert (out / f"{name}.png").stat().st_size > 1000, f"{name}.png missing or empty"
        results[name] = json.loads((out / f"{name}.json").read_text())
    results["run_all"] = json.loads((out / "run_all.json").read_text())
    return results


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_result_has_the_common_envelope(quick_results):
    for name in NAMES:
        data = quick_results[name]
        assert data["benchmark"] == name
        assert data["quick"] is True
        assert {"machine", "params", "summary", "wall_seconds"} <= set(data)
        assert data["machine"]["cpus"] >= 1
    assert quick_results["run_all"]["failed"] == []


def test_overhead(quick_results):
    data = quick_results["overhead"]
    per_size = data["summary"]["ms_per_node"]
    assert set(per_size) == {"20"}
    for figures in per_size.values():
        for figure in ("prefect", "prefect_drained", "prefect_untagged", "asyncio", "ratio", "untagged_ratio",
                       "floor_sync", "floor_async", "floor_sync_ratio", "floor_async_ratio", "over_floor_async"):
            assert _positive(figures[figure]), (figure, figures)
        assert figures["prefect_drained"] >= figures["prefect"]
    assert _positive(data["summary"]["prefect_first_run_s"])
    profile = data["profile"]
    assert len(profile["flow_thread_top_cumulative"]) == 15
    assert profile["io"]["result_files_written"] >= 1


def test_makespan(quick_results):
    summary = quick_results["makespan"]["summary"]
    for shape in ("dag", "chain"):
        for executor in ("planflow", "asyncio", "sequential", "prefect_floor_sync", "prefect_floor_async"):
            ratio = summary[shape][executor]["span_ratio"]
            assert ratio["n"] >= 1
            assert 0.9 <= ratio["median"] <= ratio["p95"] + 1e-9  # nothing beats the critical path
    assert summary["dag"]["sequential"]["span_ratio"]["median"] >= summary["dag"]["asyncio"]["span_ratio"]["median"]


def test_dispatch(quick_results):
    data = quick_results["dispatch"]
    summary, n = data["summary"], data["params"]["chain"]["n_nodes"]
    executors = ("asyncio", "prefect_floor_sync", "prefect_floor_async", "planflow")
    for executor in executors:
        hops = summary["hop_ms"][executor]
        assert hops["n"] == n - 1
        assert 0 < hops["p50"] <= hops["p95"] + 1e-9  # a dependent cannot start before its dependency ends
        assert _positive(summary["stress_makespan_s"][executor])
    latency = data["params"]["stress"]["latency_s"]
    depth = data["stress_dag"]["depth"]
    for executor in executors:  # nothing beats the critical path
        assert summary["stress_makespan_s"][executor] >= 0.9 * depth * latency
    assert set(summary["targets"]) == {"stress_planflow_over_floor_async_le_1.1", "hop_p95_within_20ms_of_asyncio"}


def test_hop_profile(quick_results):
    """Every hop is cut into segments in order (none negative), and the configurations differ as designed."""
    summary = quick_results["hop_profile"]["summary"]
    assert set(summary) == {"planflow", "planflow_no_builtin_tools", "planflow_tagged_no_tools", "prefect_floor_async"}
    for config, figures in summary.items():
        segments = figures["segments_ms_p50"]
        assert segments and all(value >= 0 for value in segments.values()), (config, segments)
        assert figures["hop_ms"]["p50"] > 0
    # A node offered tools that answers at once needs no task run for its first turn: one per node either way.
    assert summary["planflow"]["task_runs_per_node"] == summary["planflow_no_builtin_tools"]["task_runs_per_node"] == 1
    # Untagged task runs (the default) ask Prefect for no tag concurrency slots; tagged ones do, on every hop.
    slots = {c: summary[c]["engine_ms_per_task_run"]["tag concurrency slots"] for c in summary}
    assert slots["planflow_no_builtin_tools"] < 1.0 and slots["planflow_tagged_no_tools"] > slots["planflow_no_builtin_tools"]


def test_resume(quick_results):
    summary = quick_results["resume"]["summary"]
    assert summary["trials"] == 1
    assert summary["resumes_completed"] == 1
    assert summary["answers_ok"] == 1
    assert summary["duplicate_calls_total"] == 0, "a node finished before the kill was paid for again"
    assert summary["nodes_completed_before_kill"]["min"] >= 1
    assert _positive(summary["resume_wall_s"]["median"])


def test_context_tokens(quick_results):
    summary = quick_results["context_tokens"]["summary"]
    assert summary["all"]["plans"] > 1000
    assert summary["all"]["naive_over_deps"] > 1.0
    assert summary["dag"]["per_plan_ratio"]["min"] >= 1.0


def test_startup(quick_results):
    summary = quick_results["startup"]["summary"]
    assert summary["all_exit_codes_zero"] is True
    assert _positive(summary["running_server_first_llm_call_s"]["median"])
    assert _positive(summary["local_server_warm_first_llm_call_s"]["median"])  # the default, server running
    assert _positive(summary["embedded_node_started_s"]["median"])
    assert _positive(summary["embedded_tokens_per_s"]["median"])


def test_plan_quality(quick_results):
    data = quick_results["plan_quality"]
    summary = data["summary"]
    assert summary["requests"] == 1
    assert 0 <= summary["compile_failure_rate"] <= 1
    for row in data["plans"]:
        if row["compiled"]:
            assert 0.0 <= row["edge_f1"] <= 1.0
            assert row["pred_nodes"] >= 1


def test_the_server_pid_is_found_by_its_listening_port():
    """How `--prefect-api` finds the server whose CPU it counts."""
    import socket

    from benchmarks.common import pid_listening_on

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        assert pid_listening_on(port) is None  # bound, not listening
        listener.listen()
        assert pid_listening_on(port) == os.getpid()
