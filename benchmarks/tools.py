"""7. Tools: what a tool call costs as a durable step, and that a resume repeats no side effect.

(a) Cost. One node whose model (the fake server, 0 ms latency) calls a cheap user
tool, `tick(i)` (benchmarks/_tools_module.py), once per turn, N times over N
steps, then answers. It runs in the real flow, in-process, where each model turn
and each tool call is a persisted, content-keyed Prefect task nested under the
node's task run, with the call written to the ledger before and after; each
step's wall time is measured around those tasks. The baselines: the same tool
function called plainly N times, the same tool through `Tool.invoke` (argument
validation), and the same ReAct loop (`planner.react.run_tool_loop`) run with a
plain client and plain calls, nothing persisted.

(b) Resume. `flows/run.py --tools benchmarks/_tools_module.py` on that node (N
ticks, 100 ms per model turn) as its own process group: SIGKILL the group a
random moment after the ledger shows a random number of finished tool calls, then
run it again with the same run key. The tool logs every call to a file (synced
before it returns), so a side effect done twice is counted where it happens
(the goal is 0). A kill that lands inside the call itself leaves it
"may or may not have happened": the resume then fails the node naming the call
rather than repeat it (counted apart; replanning is off).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import _cli
from benchmarks._env import session_dir
from benchmarks._server import FakeOpenAI, Reply, route
from benchmarks.common import (
    REPO_ROOT,
    Result,
    describe,
    log,
    prefect_api_url,
    pyplot,
    subprocess_env,
    unique_key,
    warm_prefect,
)

TOOL_MODULE = REPO_ROOT / "benchmarks" / "_tools_module.py"
GOAL = "Record the ticks of the benchmark, one at a time"
RESUME_LATENCY = 0.1
KILL_JITTER_S = 0.25


def _plan(n_calls: int) -> dict[str, Any]:
    return {"tasks": [{"id": "t1", "description": f"Call tick with i = 1, 2, ... {n_calls}, one call per turn, "
                       "then say how many ticks were recorded.", "depends_on": []}]}


def _tool_messages(body: dict) -> int:
    return sum(1 for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "tool")


def _key(body: dict) -> str:
    """`node:t1#k`: the node's turn after k tool results, so turns can be counted one by one."""
    key = route(body)
    return f"{key}#{_tool_messages(body)}" if key.startswith("node:") else key


def tool_server(n_calls: int, latency: float) -> FakeOpenAI:
    """A model that ticks 1..n, one call per turn, then answers: a function of the conversation,
    so a resumed conversation gets the same replies."""
    from support.fake_openai import ToolCall

    def respond(body: dict) -> Reply:
        done = _tool_messages(body)
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        if "tick" in offered and done < n_calls:  # other runs (a warm-up) get an answer at once
            return Reply(tool_calls=[ToolCall("tick", {"i": done + 1}, id=f"call_{done + 1}")], delay=latency)
        return Reply(content=f"recorded {done} ticks", delay=latency)

    return FakeOpenAI(respond, key_fn=_key).start()


# -- (a) the cost of a durable tool call ----------------------------------------------


class _Timed:
    """Times `_DurableSteps.turn` / `.call` (the nested Prefect tasks) in this process."""

    def __init__(self) -> None:
        from flows import tool_steps

        self.module = tool_steps
        self.original = (tool_steps._DurableSteps.turn, tool_steps._DurableSteps.call)
        self.turns: list[float] = []
        self.calls: list[float] = []

    def __enter__(self) -> _Timed:
        turn, call = self.original
        timed = self

        async def timed_turn(self: Any, step: int, messages: list[dict[str, Any]]) -> Any:
            t0 = time.perf_counter()
            try:
                return await turn(self, step, messages)
            finally:
                timed.turns.append(time.perf_counter() - t0)

        async def timed_call(self: Any, step: int, index: int, request: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await call(self, step, index, request)
            finally:
                timed.calls.append(time.perf_counter() - t0)

        self.module._DurableSteps.turn, self.module._DurableSteps.call = timed_turn, timed_call
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module._DurableSteps.turn, self.module._DurableSteps.call = self.original


def _durable_trial(n_calls: int, base_url: str) -> dict[str, Any]:
    from flows.plan_and_execute import plan_and_execute

    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = base_url, "sk-bench"
    run_key = unique_key("tools-cost")
    with _Timed() as timed:
        t0 = time.perf_counter()
        state = asyncio.run(plan_and_execute(
            goal=GOAL, run_key=run_key, plan=_plan(n_calls), max_parallel=1, tools=[str(TOOL_MODULE)],
            builtin_tools=False, max_steps=n_calls + 2, replan_on_failure=False, return_state=True,
        ))
        wall = time.perf_counter() - t0
    result = state.result(raise_on_failure=False)
    if not state.is_completed():
        raise RuntimeError(f"tools cost run {run_key} ended {state.name}: {result!r}")
    if len(timed.calls) != n_calls or len(timed.turns) != n_calls + 1:
        raise RuntimeError(f"expected {n_calls} calls and {n_calls + 1} turns, timed {len(timed.calls)} and {len(timed.turns)}")
    return {"run_key": run_key, "run_wall_s": round(wall, 3), "answer": result["answer"],
            "call_ms": [round(s * 1000, 3) for s in timed.calls], "turn_ms": [round(s * 1000, 3) for s in timed.turns]}


async def _plain_loop(n_calls: int, base_url: str) -> dict[str, Any]:
    """The same ReAct loop, the same client and tool, nothing durable."""
    from planner.llm import LLMClient
    from planner.prompts import execution_messages
    from planner.react import Observation, run_tool_loop
    from planner.models import Task
    from planner.tools.loading import load_tools

    [tick] = load_tools(str(TOOL_MODULE))
    definitions = [tick.openai_tool()]
    client = LLMClient(base_url=base_url, api_key="sk-bench", model="bench")
    turns: list[float] = []
    calls: list[float] = []

    class Plain:
        async def turn(self, step: int, messages: list[dict[str, Any]]) -> Any:
            t0 = time.perf_counter()
            completion = await client.complete(messages, purpose="node", node_id="t1", tools=definitions)
            turns.append(time.perf_counter() - t0)
            return completion

        async def call(self, step: int, index: int, request: Any) -> Observation:
            t0 = time.perf_counter()
            result = await tick.invoke(json.loads(request.arguments))
            calls.append(time.perf_counter() - t0)
            return Observation(request.name, request.arguments, result=result)

    task = Task(**_plan(n_calls)["tasks"][0])
    try:
        outcome = await run_tool_loop(execution_messages(GOAL, task, {}, {}, 4000), Plain(), node_id="t1",
                                      max_steps=n_calls + 2)
    finally:
        await client.aclose()
    assert outcome.tool_calls == n_calls, outcome
    return {"call_ms": [s * 1000 for s in calls], "turn_ms": [s * 1000 for s in turns]}


def _plain_calls(n_calls: int, repeat: int = 200) -> dict[str, float]:
    """ms per call of the bare function, and through `Tool.invoke` (validation, async)."""
    from benchmarks import _tools_module
    from planner.tools.loading import load_tools

    [tick] = load_tools(str(TOOL_MODULE))
    t0 = time.perf_counter()
    for _ in range(repeat):
        for i in range(1, n_calls + 1):
            _tools_module.tick_plainly(i)
    bare = (time.perf_counter() - t0) * 1000 / (repeat * n_calls)

    async def invoked() -> float:
        t0 = time.perf_counter()
        for _ in range(repeat):
            for i in range(1, n_calls + 1):
                await tick.invoke({"i": i})
        return (time.perf_counter() - t0) * 1000 / (repeat * n_calls)

    return {"bare_ms": bare, "invoke_ms": asyncio.run(invoked())}


def _cost(n_calls: int, trials: int) -> dict[str, Any]:
    server = tool_server(n_calls, 0.0)
    try:
        warm_prefect(server.base_url)
        _durable_trial(n_calls, server.base_url)  # the first tool run: imports, first loads (not counted)
        durable = [_durable_trial(n_calls, server.base_url) for _ in range(trials)]
        plain_loop = [asyncio.run(_plain_loop(n_calls, server.base_url)) for _ in range(trials)]
    finally:
        server.stop()
    plain = _plain_calls(n_calls)
    call_ms = [ms for t in durable for ms in t["call_ms"]]
    turn_ms = [ms for t in durable for ms in t["turn_ms"]]
    loop_call_ms = [ms for t in plain_loop for ms in t["call_ms"]]
    loop_turn_ms = [ms for t in plain_loop for ms in t["turn_ms"]]
    durable_call = describe(call_ms)["median"]
    durable_turn = describe(turn_ms)["median"]
    plain_turn = describe(loop_turn_ms)["median"]
    summary = {
        "calls_per_run": n_calls,
        "runs": trials,
        "durable_call_ms": describe(call_ms),
        "durable_turn_ms": describe(turn_ms),
        "plain_call_ms": round(plain["bare_ms"], 5),
        "plain_invoke_ms": round(plain["invoke_ms"], 5),
        "plain_loop_call_ms": describe(loop_call_ms),
        "plain_loop_turn_ms": describe(loop_turn_ms),
        "call_ratio": round(durable_call / plain["bare_ms"]),
        "call_ratio_vs_invoke": round(durable_call / plain["invoke_ms"]),
        "turn_ratio": round(durable_turn / plain_turn, 1),
        "durable_step_ms": round(durable_call + durable_turn, 2),
        "plain_step_ms": round(describe(loop_call_ms)["median"] + plain_turn, 2),
    }
    return {"durable": durable, "plain_loop": plain_loop, "plain": plain, "summary": summary}


# -- (b) resume with tools ---------------------------------------------------------------


def _finished_calls(ledger: Any, run_key: str) -> int:
    return sum(1 for c in ledger.tool_calls(run_key) if c.finished_at is not None)


def _trial(n: int, n_calls: int, rng: random.Random, env: dict[str, str], plan_file: Path, server: FakeOpenAI,
           ledger: Any, tool_log: Path, log_dir: Path) -> dict[str, Any]:
    run_key = unique_key(f"tools-resume{n}")
    env = {**env, "BENCH_RUN_KEY": run_key}
    args = [GOAL, "--plan", str(plan_file), "--run-key", run_key, "--tools", str(TOOL_MODULE),
            "--no-builtin-tools", "--max-steps", str(n_calls + 2), "--no-replan", "--quiet"]
    kill_after = rng.randint(1, max(1, n_calls - 2))
    jitter = rng.uniform(0.0, KILL_JITTER_S)
    calls_at_start = len(server.calls)
    proc = _cli.start(args, env, log_dir, f"trial{n}-first")
    try:
        deadline = time.monotonic() + 180
        while _finished_calls(ledger, run_key) < kill_after:
            if proc.poll() is not None:
                raise RuntimeError(f"tools trial {n}: the CLI exited ({proc.returncode}) before {kill_after} tool calls: "
                                   + _cli.read(log_dir, f"trial{n}-first", "stderr")[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"tools trial {n}: {kill_after} tool calls did not finish within 180 s")
            time.sleep(0.01)
        time.sleep(jitter)
        finished_before_kill = proc.poll() is not None
        _cli.kill_group(proc.pid)
        t_kill = time.monotonic()
    finally:
        _cli.finish(proc)
    rows = ledger.tool_calls(run_key)
    done_before = sum(1 for c in rows if c.finished_at is not None)
    in_flight = [c.step for c in rows if c.finished_at is None]
    effects_before = _effects(tool_log, run_key)
    first_calls = server.calls[calls_at_start:]
    answered = {c.key for c in first_calls if c.status == 200 and 0 < c.finished <= t_kill}
    n_before = len(server.calls)

    code, resume_s, stdout, stderr = _cli.run(args, env, log_dir, f"trial{n}-resume", timeout=300)
    resume_keys = [c.key for c in server.calls[n_before:]]
    effects = _effects(tool_log, run_key)
    repeated = sum(count - 1 for count in effects.values() if count > 1)
    row = {
        "trial": n,
        "run_key": run_key,
        "kill_after_tool_calls": kill_after,
        "kill_jitter_s": round(jitter, 3),
        "run_finished_before_kill": finished_before_kill,
        "tool_calls_finished_before_kill": done_before,
        "tool_call_in_flight_at_kill": in_flight,
        "side_effects_before_kill": sum(effects_before.values()),
        "side_effects_after_resume": sum(effects.values()),
        "side_effects_repeated": repeated,
        "ticks_missing": [i for i in range(1, n_calls + 1) if i not in effects],
        "turns_answered_before_kill": len(answered),
        "turns_asked_again": sorted(k for k in resume_keys if k in answered),
        "resume_model_calls": len(resume_keys),
        "resume_exit_code": code,
        "resume_completed": code == 0 and stdout.strip() == f"recorded {n_calls} ticks",
        "resume_failed_naming_the_call": code != 0 and "may or may not have happened" in stderr,
        "resume_wall_s": round(resume_s, 3),
    }
    if code != 0:
        row["resume_stderr_tail"] = stderr[-1500:]
    return row


def _effects(tool_log: Path, run_key: str) -> Counter[int]:
    if not tool_log.exists():
        return Counter()
    entries = (line.split() for line in tool_log.read_text().splitlines())
    return Counter(int(parts[1]) for parts in entries if len(parts) == 2 and parts[0] == run_key)


def _resume(n_calls: int, trials: int) -> dict[str, Any]:
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    server = tool_server(n_calls, RESUME_LATENCY)
    work = session_dir() / "tools"
    work.mkdir(parents=True, exist_ok=True)
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(_plan(n_calls)))
    tool_log = work / "ticks.log"
    try:
        warm_prefect(server.base_url)
        env = subprocess_env(work / "prefect-home", api_url=prefect_api_url(), OPENAI_BASE_URL=server.base_url,
                             OPENAI_API_KEY="sk-bench", BENCH_TOOL_LOG=str(tool_log))
        ledger = Ledger(PlanflowSettings().ledger_url)
        rng = random.Random(11)
        rows = []
        for n in range(trials):
            rows.append(_trial(n, n_calls, rng, env, plan_file, server, ledger, tool_log, work / "logs"))
            r = rows[-1]
            log(f"tools resume trial {n}: {r['tool_calls_finished_before_kill']} calls done before kill, "
                f"{r['side_effects_repeated']} repeated, resume exit {r['resume_exit_code']} in {r['resume_wall_s']} s")
        ledger.close()
    finally:
        server.stop()
    summary = {
        "trials": len(rows),
        "calls_per_run": n_calls,
        "side_effects_repeated_total": sum(r["side_effects_repeated"] for r in rows),
        "resumes_completed": sum(r["resume_completed"] for r in rows),
        "resumes_failed_naming_an_unfinished_call": sum(r["resume_failed_naming_the_call"] for r in rows),
        "tool_calls_finished_before_kill": describe([r["tool_calls_finished_before_kill"] for r in rows]),
        "turns_asked_again_total": sum(len(r["turns_asked_again"]) for r in rows),
        "resume_wall_s": describe([r["resume_wall_s"] for r in rows]),
    }
    return {"trials": rows, "summary": summary}


def run(out: Path, quick: bool) -> Result:
    n_calls, cost_runs = (5, 1) if quick else (20, 3)
    resume_calls, resume_trials = (4, 1) if quick else (12, 10)
    result = Result("tools", quick, {
        "cost": {"calls_per_run": n_calls, "runs": cost_runs, "latency_s": 0.0, "tool": "tick (in-memory count)"},
        "resume": {"calls_per_run": resume_calls, "trials": resume_trials, "latency_s": RESUME_LATENCY,
                   "kill": f"after 1..{max(1, resume_calls - 2)} finished tool calls + 0-{KILL_JITTER_S} s",
                   "tool": "tick (synced line per call)", "prefect_api": "shared server", "replan": False},
    })
    cost = _cost(n_calls, cost_runs)
    log(f"tools cost: durable call {cost['summary']['durable_call_ms']['median']:.1f} ms, plain "
        f"{cost['summary']['plain_call_ms'] * 1000:.2f} us; turn {cost['summary']['durable_turn_ms']['median']:.1f} ms")
    resume = _resume(resume_calls, resume_trials)
    result["cost"] = {k: v for k, v in cost.items() if k != "summary"}
    result["resume_trials"] = resume["trials"]
    result["summary"] = {"cost": cost["summary"], "resume": resume["summary"]}
    _plot(result, out)
    result.write(out)
    return result


def _plot(result: Result, out: Path) -> None:
    plt = pyplot()
    cost, resume = result["summary"]["cost"], result["summary"]["resume"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = ["tool call", "model turn"]
    durable = [cost["durable_call_ms"]["median"], cost["durable_turn_ms"]["median"]]
    plain = [cost["plain_loop_call_ms"]["median"], cost["plain_loop_turn_ms"]["median"]]
    x = range(len(labels))
    a.bar([i - 0.2 for i in x], durable, 0.4, label="durable (nested Prefect task)")
    a.bar([i + 0.2 for i in x], plain, 0.4, label="plain (same loop, nothing persisted)")
    a.set_xticks(list(x), labels)
    a.set_ylabel("ms (median)")
    a.set_title(f"One step of a tool loop, 0 ms model latency ({cost['calls_per_run']} calls/run)")
    a.legend(fontsize=8)
    rows = result["resume_trials"]
    t = [r["trial"] for r in rows]
    b.bar([i - 0.2 for i in t], [r["tool_calls_finished_before_kill"] for r in rows], 0.4, label="tool calls done before kill")
    b.bar([i + 0.2 for i in t], [r["side_effects_repeated"] for r in rows], 0.4, label="side effects repeated", color="C3")
    b.set_xlabel("trial")
    b.set_ylabel("calls")
    b.set_title(f"SIGKILL + resume with tools: {resume['side_effects_repeated_total']} repeated, "
                f"{resume['resumes_completed']}/{resume['trials']} completed")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tools.png", dpi=110)
    plt.close(fig)
