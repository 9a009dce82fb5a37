"""5. Start-up: from `python flows/run.py` to the first model call, and the embedded model's speed.

Each measurement runs the CLI on a 1-task `--plan` file (no planning call), so
the first model call is the node's.

* `running_server`: an OpenAI-compatible server is already up (the fake one,
  answering at once). Measured on the server: launch -> first request. Prefect
  runs as the CLI does by default: a temporary API server started by the CLI.
  Its database is a copy of an already-migrated one, as on any machine after
  its first run (the first run ever also migrates the schema: `prefect_first_run_s`
  in overhead.json).
* `running_server_with_prefect_api`: the same, with PREFECT_API_URL pointing at
  a running Prefect server, to show what the temporary server costs.
* `local_server_warm`: the default for a person (PLANFLOW_SERVER=local) on a warm
  machine, the second run of the day: the local Prefect server (`planflow server
  start`) already runs on a migrated database; the CLI reuses it.
  Each row also has the CLI process's own CPU seconds (user + system) when its first
  model call arrives: on a loaded machine the wall time stretches, this hardly does,
  and on an idle one the wall time cannot be lower.
* `local_server_first_ever`: the same default on a fresh PLANFLOW_HOME, once: the
  CLI starts the local server, which migrates its new database first (what a
  person's first run ever costs, said as it is).
* `embedded_default`: no OPENAI_* variables, so the CLI starts the bundled
  SmolLM2 in a child process we cannot watch; measured from the ledger instead:
  launch -> the node's `started_at` (written just before its model call), and
  the CLI's total wall time.
* `import_only`: `python -c "import flows.plan_and_execute"`, the floor.
* `embedded_tokens_per_s`: `planner.embedded.EmbeddedModelServer` + the openai
  SDK, one ~200-token completion per repetition, with the default thread count
  (PLANFLOW_EMBEDDED_THREADS) and, once, with another count for comparison (1
  thread, or every core up to 4 where the default is 1).

`--quick` (1 repetition) keeps the embedded run's answer to 32 tokens, measures
tokens/s on 64-token completions and skips `import_only`, `local_server_first_ever` and
the thread-count comparison.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path
from typing import Any

from benchmarks import _cli
from benchmarks._env import session_dir
from benchmarks._server import latency_server, reset_server
from benchmarks.common import (
    REPO_ROOT,
    Result,
    describe,
    log,
    prefect_api_url,
    process_cpu_seconds,
    pyplot,
    snapshot_prefect_db,
    subprocess_env,
    unique_key,
    warm_prefect,
)

PLAN = {"tasks": [{"id": "t1", "description": "Say hello in three languages.", "depends_on": []}]}
TOKENS_PROMPT = "Write a long, detailed essay about the history of bridges, from antiquity to today."


def _node_started_after(ledger: Any, run_key: str, launched_wall: float) -> float | None:
    nodes = [n for n in ledger.nodes(run_key) if n.started_at is not None]
    if not nodes:
        return None
    started = nodes[0].started_at
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return round(started.timestamp() - launched_wall, 3)


def _cli_once(env: dict[str, str], plan_file: Path, log_dir: Path, tag: str, server: Any, ledger: Any) -> dict[str, Any]:
    run_key = unique_key(tag)
    cli: dict[str, Any] = {}
    if server is not None:
        reset_server(server)
        answer = server.bench_responder

        def respond(body: dict) -> Any:  # the CLI's own CPU seconds when its first model call arrives
            if "pid" in cli and "cpu_s" not in cli:
                cli["cpu_s"] = process_cpu_seconds(cli["pid"])
            return answer(body)

        server.set_default(respond)
    launched_wall, launched = time.time(), time.monotonic()
    proc = _cli.start(["Say hello", "--plan", str(plan_file), "--run-key", run_key, "--quiet"], env, log_dir, tag)
    cli["pid"] = proc.pid
    try:
        try:
            code = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            code = -9
        wall = time.monotonic() - launched
    finally:
        _cli.finish(proc)
    stderr = _cli.read(log_dir, tag, "stderr")
    row: dict[str, Any] = {"exit_code": code, "wall_s": round(wall, 3),
                           "node_started_s": _node_started_after(ledger, run_key, launched_wall)}
    if "cpu_s" in cli:
        row["cli_cpu_to_first_llm_call_s"] = round(cli["cpu_s"], 3)
    if server is not None and server.calls:
        row["first_llm_call_s"] = round(min(c.started for c in server.calls) - launched, 3)
    if code != 0:
        row["stderr_tail"] = stderr[-1500:]
    return row


def _local_server_env(home: Path, servers: list[Any], *, warm: bool, **extra: str) -> dict[str, str]:
    """A CLI environment with PLANFLOW_SERVER=local and a PLANFLOW_HOME of its own. `warm`: its
    server is started now, on a copy of the session's migrated Prefect database, and waited for
    (as after `planflow server start`); otherwise the CLI starts it on a fresh database."""
    import socket

    from flows.local_server import LocalServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local = LocalServer(home, port)
    servers.append(local)
    if warm:
        snapshot_prefect_db(local.prefect_home)
        local.wait_until_healthy(local.start())
    from planner.settings import PlanflowSettings

    return subprocess_env(home / "prefect-of-the-cli", PLANFLOW_SERVER="local", PLANFLOW_HOME=str(home),
                          PLANFLOW_SERVER_PORT=str(port), PLANFLOW_DATABASE_URL=PlanflowSettings().ledger_url, **extra)


def _import_once() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import flows.plan_and_execute"], cwd=str(REPO_ROOT), check=True)
    return round(time.monotonic() - t0, 3)


def _tokens_per_second(reps: int, threads: int, max_tokens: int = 200) -> dict[str, Any]:
    import openai

    from planner.embedded import EmbeddedModelServer, EmbeddedServerConfig
    from planner.settings import PlanflowSettings

    settings = PlanflowSettings()
    t0 = time.monotonic()
    server = EmbeddedModelServer(EmbeddedServerConfig(ctx_size=settings.embedded_ctx, threads=threads))
    server.start()
    start_s = time.monotonic() - t0
    rows = []
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="embedded", max_retries=0, timeout=300)
        for _ in range(reps):
            t = time.monotonic()
            response = client.chat.completions.create(
                model=server.model, messages=[{"role": "user", "content": TOKENS_PROMPT}], max_tokens=max_tokens,
                temperature=0.7,
            )
            seconds = time.monotonic() - t
            tokens = response.usage.completion_tokens if response.usage else 0
            rows.append({"completion_tokens": tokens, "seconds": round(seconds, 3),
                         "tokens_per_s": round(tokens / seconds, 1), "finish_reason": response.choices[0].finish_reason})
        client.close()
    finally:
        server.stop()
    return {"threads": threads, "server_start_s": round(start_s, 3), "reps": rows,
            "tokens_per_s": describe([r["tokens_per_s"] for r in rows])}


def run(out: Path, quick: bool) -> Result:
    reps = 1 if quick else 3
    result = Result("startup", quick, {"reps": reps, "plan": "1 task, --plan file",
                                       "tokens_per_s_max_tokens": 64 if quick else 200,
                                       "embedded_run_node_max_tokens": 32 if quick else "default (512)"})
    from planner.ledger import Ledger
    from planner.settings import EMBEDDED_THREADS_MAX, PlanflowSettings, usable_cpus

    work = session_dir() / "startup"
    plan_file = work / "plan.json"
    work.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(PLAN))
    ledger = Ledger(PlanflowSettings().ledger_url)
    server = latency_server(0.0)
    modes: dict[str, list[dict[str, Any]]] = {"running_server": [], "running_server_with_prefect_api": [],
                                              "local_server_warm": [], "local_server_first_ever": [],
                                              "embedded_default": [], "import_only": []}
    local_servers: list[Any] = []
    try:
        warm_prefect(server.base_url)
        ephemeral_home = work / "prefect-ephemeral"
        copied = snapshot_prefect_db(ephemeral_home)
        fake = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-bench"}
        envs = {
            "running_server": subprocess_env(ephemeral_home, **fake),
            "running_server_with_prefect_api": subprocess_env(work / "prefect-api", api_url=prefect_api_url(), **fake),
            # --quick caps the node's answer: the figure is the time to the node's start, not generation
            "local_server_warm": _local_server_env(work / "local-warm", local_servers, warm=True, **fake),
            "embedded_default": subprocess_env(ephemeral_home, **({"PLANFLOW_NODE_MAX_TOKENS": "32"} if quick else {})),
        }
        if not quick:  # a fresh database's migration: 20-60 s
            first_ever_env = _local_server_env(work / "local-first", local_servers, warm=False, **fake)
            row = _cli_once(first_ever_env, plan_file, work / "logs", "local_server_first_ever", server, ledger)
            modes["local_server_first_ever"].append(row)
            log(f"startup local_server_first_ever: {row}")
        for rep in range(reps):
            if not quick:
                modes["import_only"].append({"wall_s": _import_once()})
            for mode, env in envs.items():
                row = _cli_once(env, plan_file, work / "logs", f"{mode}-{rep}",
                                None if mode == "embedded_default" else server, ledger)
                modes[mode].append(row)
                log(f"startup {mode} rep {rep}: {row}")
        result["prefect_db_copied"] = copied
    finally:
        server.stop()
        ledger.close()
        for local in local_servers:
            local.stop()
    result["modes"] = modes
    default_threads = PlanflowSettings().embedded_threads
    result["embedded_model"] = _tokens_per_second(reps, default_threads, 64 if quick else 200)
    log(f"embedded model, {default_threads} threads (default): {result['embedded_model']['tokens_per_s']}")
    other_threads = 1 if default_threads != 1 else min(EMBEDDED_THREADS_MAX, usable_cpus())
    if other_threads != default_threads and not quick:
        result["embedded_model_other_threads"] = _tokens_per_second(1, other_threads)
        log(f"embedded model, {other_threads} threads: {result['embedded_model_other_threads']['tokens_per_s']}")

    def figure(mode: str, key: str) -> dict[str, Any]:
        return describe([r[key] for r in modes[mode] if r.get(key) is not None])

    result["summary"] = {
        "running_server_first_llm_call_s": figure("running_server", "first_llm_call_s"),
        "running_server_wall_s": figure("running_server", "wall_s"),
        "with_prefect_api_first_llm_call_s": figure("running_server_with_prefect_api", "first_llm_call_s"),
        "local_server_warm_first_llm_call_s": figure("local_server_warm", "first_llm_call_s"),
        "local_server_warm_wall_s": figure("local_server_warm", "wall_s"),
        "local_server_warm_cli_cpu_s": figure("local_server_warm", "cli_cpu_to_first_llm_call_s"),
        "running_server_cli_cpu_s": figure("running_server", "cli_cpu_to_first_llm_call_s"),
        "local_server_first_ever_first_llm_call_s": figure("local_server_first_ever", "first_llm_call_s"),
        "embedded_node_started_s": figure("embedded_default", "node_started_s"),
        "embedded_wall_s": figure("embedded_default", "wall_s"),
        "import_only_s": figure("import_only", "wall_s"),
        "embedded_tokens_per_s": result["embedded_model"]["tokens_per_s"],
        "embedded_threads": result["embedded_model"]["threads"],
        "embedded_tokens_per_s_other_threads": result.data.get("embedded_model_other_threads", {}).get(
            "tokens_per_s", {"n": 0}),
        "embedded_other_threads": result.data.get("embedded_model_other_threads", {}).get("threads"),
        "embedded_server_start_s": result["embedded_model"]["server_start_s"],
        "all_exit_codes_zero": all(r.get("exit_code", 0) == 0 for rows in modes.values() for r in rows),
    }
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    s = result["summary"]
    labels = ["import only", "running LLM server\n+ warm local server (default)", "running LLM server\n+ Prefect API server",
              "running LLM server\n(PLANFLOW_SERVER=temporary)", "embedded model\n(temporary Prefect)",
              "first run ever\n(local server migrates)"]
    first = [s["import_only_s"].get("median", 0), s["local_server_warm_first_llm_call_s"].get("median", 0),
             s["with_prefect_api_first_llm_call_s"].get("median", 0), s["running_server_first_llm_call_s"].get("median", 0),
             s["embedded_node_started_s"].get("median", 0), s["local_server_first_ever_first_llm_call_s"].get("median", 0)]
    fig, ax = plt.subplots(figsize=(8, 5))
    bars = ax.barh(labels, first, color=["grey", "C2", "C4", "C0", "C1", "C3"])
    for bar, value in zip(bars, first):
        ax.annotate(f"{value:.1f} s", (value, bar.get_y() + bar.get_height() / 2), va="center", fontsize=9,
                    xytext=(3, 0), textcoords="offset points")
    tps = s["embedded_tokens_per_s"].get("median", 0)
    other = s.get("embedded_tokens_per_s_other_threads", {}).get("median", 0)
    ax.set_xlabel("seconds from `python flows/run.py` to the first model call (median)")
    ax.set_title(f"Start-up (embedded SmolLM2: {tps:.0f} tokens/s with {s.get('embedded_threads')} thread(s), "
                 f"{other:.0f} with {s.get('embedded_other_threads')})")
    fig.tight_layout()
    fig.savefig(out / "startup.png", dpi=110)
    plt.close(fig)
