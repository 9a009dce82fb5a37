"""3. Resume: SIGKILL a run at a random moment, re-run it with the same --run-key.

Each trial starts `flows/run.py` on an 8-node DAG plan (300 ms per model call),
waits until the ledger shows the first finished node, waits a random 0-1.2 s
more, SIGKILLs the CLI's whole process group, and runs the CLI again with the
same run key. The model server counts every call by node, so a node that had
finished before the kill and was called again is a duplicate (the goal is 0).

The CLI runs against this process's Prefect API server (PREFECT_API_URL), so a
trial does not pay Prefect's temporary-server start-up twice; that cost is
measured by the `startup` benchmark and adds to `resume_wall_s` for a user
without a Prefect server.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks import _cli
from benchmarks._env import session_dir
from benchmarks._server import call_tokens, latency_server, result_text
from benchmarks.common import Result, describe, log, prefect_api_url, pyplot, subprocess_env, unique_key, warm_prefect

LATENCY = 0.3
RESULT_CHARS = 200
KILL_WINDOW_S = 1.2
DAG = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["a"]), ("e", ["b", "c"]), ("f", ["c", "d"]),
       ("g", ["e", "f"]), ("h", ["g"])]
GOAL = "Write a short market analysis of electric bicycles in Lisbon"


def _plan() -> dict[str, Any]:
    return {"tasks": [{"id": i, "description": f"Step {i}: research and write part {i} of the analysis.",
                       "depends_on": deps} for i, deps in DAG]}


def _reply(key: str) -> str:
    return result_text(key, RESULT_CHARS)


def _trial(n: int, rng: random.Random, env: dict[str, str], plan_file: Path, server: Any, ledger: Any,
           log_dir: Path) -> dict[str, Any]:
    run_key = unique_key(f"resume{n}")
    args = [GOAL, "--plan", str(plan_file), "--run-key", run_key, "--max-parallel", "4", "--quiet"]
    delay = rng.uniform(0.0, KILL_WINDOW_S)
    calls_at_start = len(server.calls)
    t_launch = time.monotonic()
    proc = _cli.start(args, env, log_dir, f"trial{n}-first")
    finished_before_kill = False
    try:
        deadline = t_launch + 180
        while time.monotonic() < deadline:
            if any(r.status == "completed" for r in ledger.nodes(run_key)):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"trial {n}: the CLI exited ({proc.returncode}) before any node finished: "
                                   + _cli.read(log_dir, f"trial{n}-first", "stderr")[-2000:])
            time.sleep(0.02)
        else:
            raise RuntimeError(f"trial {n}: no node finished within 180 s")
        t_first_node = time.monotonic()
        time.sleep(delay)
        finished_before_kill = proc.poll() is not None
        _cli.kill_group(proc.pid)
        t_kill = time.monotonic()
    finally:
        _cli.finish(proc)
    completed = sorted(r.node_id for r in ledger.nodes(run_key) if r.status == "completed")
    first_calls = [c for c in server.calls[calls_at_start:] if (c.key or "").startswith("node:")]
    answered = {c.key[5:] for c in first_calls if c.status == 200 and 0 < c.finished <= t_kill}
    n_before = len(server.calls)

    code, resume_s, stdout, stderr = _cli.run(args, env, log_dir, f"trial{n}-resume", timeout=300)
    t_resume_launch = time.monotonic() - resume_s
    resume_calls = server.calls[n_before:]
    resumed_nodes = [c.key[5:] for c in resume_calls if (c.key or "").startswith("node:")]
    duplicates = [x for x in resumed_nodes if x in completed]
    statuses = {r.node_id: r.status for r in ledger.nodes(run_key)}
    row = {
        "trial": n,
        "run_key": run_key,
        "kill_delay_after_first_node_s": round(delay, 3),
        "first_node_after_launch_s": round(t_first_node - t_launch, 3),
        "run_finished_before_kill": finished_before_kill,
        "nodes_completed_before_kill": len(completed),
        "completed_before_kill": completed,
        "answered_by_model_before_kill": sorted(answered),
        "answered_but_not_recorded": sorted(answered - set(completed)),
        "resume_exit_code": code,
        "resume_completed": code == 0 and all(s in ("completed", "cached") for s in statuses.values()),
        "resume_llm_calls": len(resume_calls),
        "resume_node_calls": sorted(resumed_nodes),
        "duplicate_calls": len(duplicates),
        "duplicate_nodes": sorted(duplicates),
        "tokens_resume": sum(call_tokens(c, _reply) for c in resume_calls),
        "tokens_completed_before_kill": sum(call_tokens(c, _reply) for c in first_calls if c.key[5:] in completed),
        "tokens_first_run": sum(call_tokens(c, _reply) for c in server.calls[calls_at_start:n_before]),
        "resume_wall_s": round(resume_s, 3),
        "resume_to_first_llm_call_s": round(min(c.started for c in resume_calls) - t_resume_launch, 3)
        if resume_calls else None,
        "answer_ok": stdout.strip() == _reply("node:h"),
    }
    if code != 0:
        row["resume_stderr_tail"] = stderr[-1500:]
    return row


def run(out: Path, quick: bool) -> Result:
    trials = 1 if quick else 20
    result = Result("resume", quick, {"trials": trials, "latency_s": LATENCY, "dag": DAG, "kill_window_s": KILL_WINDOW_S,
                                      "result_chars": RESULT_CHARS, "max_parallel": 4, "prefect_api": "shared server",
                                      "token_count": "whitespace words, as the fake server counts"})
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    server = latency_server(LATENCY, RESULT_CHARS)
    work = session_dir() / "resume"
    work.mkdir(parents=True, exist_ok=True)
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(_plan()))
    try:
        warm_prefect(server.base_url)
        env = subprocess_env(work / "prefect-home", api_url=prefect_api_url(),
                             OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-bench")
        ledger = Ledger(PlanflowSettings().ledger_url)
        rng = random.Random(20)
        rows = []
        for n in range(trials):
            rows.append(_trial(n, rng, env, plan_file, server, ledger, work / "logs"))
            r = rows[-1]
            log(f"resume trial {n}: {r['nodes_completed_before_kill']} done before kill, "
                f"{r['duplicate_calls']} duplicate calls, resume {r['resume_wall_s']} s, exit {r['resume_exit_code']}")
        ledger.close()
    finally:
        server.stop()
    result["trials"] = rows
    done = [r["nodes_completed_before_kill"] for r in rows]
    result["summary"] = {
        "trials": len(rows),
        "resumes_completed": sum(r["resume_completed"] for r in rows),
        "answers_ok": sum(r["answer_ok"] for r in rows),
        "duplicate_calls_total": sum(r["duplicate_calls"] for r in rows),
        "nodes_completed_before_kill": describe(done),
        "answered_but_not_recorded_total": sum(len(r["answered_but_not_recorded"]) for r in rows),
        "tokens_resume_total": sum(r["tokens_resume"] for r in rows),
        "tokens_completed_before_kill_total": sum(r["tokens_completed_before_kill"] for r in rows),
        "resume_wall_s": describe([r["resume_wall_s"] for r in rows]),
        "resume_to_first_llm_call_s": describe([r["resume_to_first_llm_call_s"] for r in rows
                                                if r["resume_to_first_llm_call_s"] is not None]),
    }
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    rows = result["trials"]
    x = [r["trial"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.bar([i - 0.2 for i in x], [r["nodes_completed_before_kill"] for r in rows], 0.4, label="nodes done before kill")
    a.bar([i + 0.2 for i in x], [r["duplicate_calls"] for r in rows], 0.4, label="duplicate calls on resume", color="C3")
    a.set_xlabel("trial")
    a.set_ylabel("nodes / calls")
    a.set_ylim(0, len(DAG) + 0.5)
    a.set_title(f"SIGKILL + resume, {len(DAG)}-node DAG, {int(LATENCY * 1000)} ms/call")
    a.legend()
    b.bar([i - 0.2 for i in x], [r["tokens_completed_before_kill"] for r in rows], 0.4,
          label="tokens of nodes done before kill (a restart re-pays)")
    b.bar([i + 0.2 for i in x], [r["tokens_resume"] for r in rows], 0.4, label="tokens spent by the resume")
    b.set_xlabel("trial")
    b.set_ylabel("tokens (whitespace words)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "resume.png", dpi=110)
    plt.close(fig)
