"""Print the README's results table from the result files: `python -m benchmarks.table [DIR]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from benchmarks.common import DEFAULT_OUT


# `overhead --prefect-api` runs against a separate server, one directory each (benchmarks/README.md)
SERVER_RUNS = (("SQLite", "prefect-server-sqlite"), ("PostgreSQL", "prefect-server-postgres"))
LOADED_STARTUP = "startup-loaded"
"""A `startup` run taken on a loaded machine, kept apart from the idle figures (benchmarks/README.md)."""


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _each(per_size: Iterable[dict[str, Any]], figure: str, fmt: str = "{:.0f}") -> str:
    """One figure of every DAG size, `a / b / c`."""
    return " / ".join(fmt.format(f[figure]) for f in per_size)


def rows(out: Path) -> list[tuple[str, str, str]]:
    table: list[tuple[str, str, str]] = []
    if d := _load(out, "overhead"):
        for n, f in d["summary"]["ms_per_node"].items():
            size = next(r for r in d["sizes"] if str(r["n_nodes"]) == n)
            untagged = (f"; untagged (the default) {f['prefect_untagged']:.0f} ms/node "
                        f"({f['prefect_untagged_drained']:.0f} until the server caught up)"
                        if "prefect_untagged" in f else "")
            table.append((f"Overhead, {n}-node DAG, 0 ms latency", f"`PLANFLOW_TASK_TAGS=true` {f['prefect']:.0f} ms/node "
                          f"({size['prefect_cpu_ms_per_node']:.0f} ms CPU + {size['prefect_server_cpu_ms_per_node']:.0f} ms "
                          f"Prefect-server CPU){untagged}",
                          f"{f['asyncio']:.1f} ms/node (asyncio); **{f['ratio']}x**"
                          + (f" (untagged {f['untagged_ratio']}x)" if "untagged_ratio" in f else "")
                          + (f"; Prefect floor sync {f['floor_sync']:.0f} ms/node ({f['floor_sync_ratio']}x), "
                             f"async {f['floor_async']:.0f} ms/node ({f['floor_async_ratio']}x); Planflow / async "
                             f"floor **{f['over_floor_async']}x** (untagged {f['untagged_over_floor_async']}x)"
                             if "floor_async" in f else "")))
        w = d["prefect_warmup"]
        home = "a fresh PREFECT_HOME" if w.get("fresh_prefect_home", True) else "a migrated PREFECT_HOME"
        table.append((f"Prefect first run on {home} (excluded above)", f"{w['first_run_s']:.0f} s",
                      f"next 1-node run {w['second_run_s']:.1f} s"))
    for database, subdir in SERVER_RUNS:
        if d := _load(out / subdir, "overhead"):
            by_size, sizes = d["summary"]["ms_per_node"], d["sizes"]
            per_size = by_size.values()
            table.append((f"Overhead, {' / '.join(by_size)} nodes, `prefect server start` on {database}",
                          f"{_each(per_size, 'prefect')} ms/node ({_each(per_size, 'ratio', '{}x')}); untagged "
                          f"{_each(per_size, 'prefect_untagged')} ({_each(per_size, 'untagged_ratio', '{}x')})",
                          f"server CPU {_each(sizes, 'prefect_server_cpu_ms_per_node')} ms/node; "
                          f"asyncio {_each(per_size, 'asyncio', '{:.1f}')} ms/node"))
    if d := _load(out, "makespan"):
        s = d["summary"]
        lat = int(d["params"]["latency_s"] * 1000)
        for shape in ("dag", "chain"):
            if shape not in s:
                continue
            f = {k: v["span_ratio"] for k, v in s[shape].items() if isinstance(v, dict) and "span_ratio" in v}
            floors = "".join(f"; Prefect floor {kind} {f[k]['median']:.2f} / {f[k]['p95']:.2f}"
                             for kind, k in (("sync", "prefect_floor_sync"), ("async", "prefect_floor_async"))
                             if k in f)
            if "planflow_over_floor_async" in s[shape]:
                r = s[shape]["planflow_over_floor_async"]
                floors += f"; Planflow / async floor per plan {r['median']:.2f} / {r['p95']:.2f}"
            table.append((f"Makespan / (critical path x {lat} ms), {shape}s (n={f['planflow']['n']}), median / p95",
                          f"{f['planflow']['median']:.2f} / {f['planflow']['p95']:.2f}",
                          f"asyncio {f['asyncio']['median']:.2f} / {f['asyncio']['p95']:.2f}; sequential "
                          f"{f['sequential']['median']:.2f} / {f['sequential']['p95']:.2f}{floors}"))
        failed = s.get("failed_runs", {}).get("planflow", [])
        if failed:
            table.append(("Makespan sample runs Planflow failed", f"{len(failed)} of {len(d['dags'])}", ", ".join(failed[:4])))
    if d := _load(out, "dispatch"):
        s, p = d["summary"], d["params"]
        h, c = s["hop_ms"], p["chain"]
        table.append((f"Per-hop dispatch, {c['n_nodes']}-node chain at {int(c['latency_s'] * 1000)} ms: dependency's "
                      f"call end to dependent's call start, p50 / p95 ({d['params']['rounds']} rounds)",
                      f"{h['planflow']['p50']:.1f} / {h['planflow']['p95']:.1f} ms "
                      f"(**+{s['hop_p95_over_asyncio_ms']['planflow']:.0f} ms** at p95 vs asyncio)",
                      f"asyncio {h['asyncio']['p50']:.1f} / {h['asyncio']['p95']:.1f} ms; Prefect floor async "
                      f"{h['prefect_floor_async']['p50']:.1f} / {h['prefect_floor_async']['p95']:.1f}, sync "
                      f"{h['prefect_floor_sync']['p50']:.1f} / {h['prefect_floor_sync']['p95']:.1f} ms"))
        m, q = s["stress_makespan_s"], p["stress"]
        table.append((f"Stress makespan, {q['n_nodes']}-node DAG at {int(q['latency_s'] * 1000)} ms, max_parallel "
                      f"{q['max_parallel']} (median of {d['params']['rounds']})",
                      f"{m['planflow']:.2f} s: **{s['stress_over_floor_async']['planflow']}x** the async Prefect "
                      f"floor, {s['stress_over_asyncio']['planflow']}x asyncio",
                      f"asyncio {m['asyncio']:.2f} s; Prefect floor async {m['prefect_floor_async']:.2f} s "
                      f"({s['stress_over_asyncio']['prefect_floor_async']}x), sync {m['prefect_floor_sync']:.2f} s "
                      f"({s['stress_over_asyncio']['prefect_floor_sync']}x)"))
    if d := _load(out, "hop_profile"):
        s, n = d["summary"], d["params"]["chain_nodes"]

        def parts(config: str) -> str:
            return ", ".join(f"{name} {ms:.1f}" for name, ms in s[config]["segments_ms_p50"].items() if ms >= 0.5)

        tagged = s["planflow_tagged_no_tools"]
        table.append((f"Where a hop goes, {n}-node chain at 0 ms, p50 per segment (ms)",
                      f"{s['planflow']['hop_ms']['p50']:.1f} ms: {parts('planflow')}",
                      f"without built-in tools {s['planflow_no_builtin_tools']['hop_ms']['p50']:.1f}; with task-run "
                      f"tags {tagged['hop_ms']['p50']:.1f} (tag slots "
                      f"{tagged['engine_ms_per_task_run']['tag concurrency slots']:.1f} ms per task run); Prefect "
                      f"floor async {s['prefect_floor_async']['hop_ms']['p50']:.1f}: {parts('prefect_floor_async')}"))
    if d := _load(out, "resume"):
        s = d["summary"]
        table.append((f"Resume after SIGKILL ({s['trials']} trials): duplicate calls of finished nodes",
                      f"**{s['duplicate_calls_total']}**",
                      f"resumes completed {s['resumes_completed']}/{s['trials']}; nodes done before kill median "
                      f"{s['nodes_completed_before_kill']['median']:.0f}"))
        table.append(("Resume: tokens spent by the resumes vs tokens of nodes finished before the kill",
                      f"{s['tokens_resume_total']} vs {s['tokens_completed_before_kill_total']}",
                      "a restart from scratch re-pays the second figure"))
        table.append(("Resume: wall time of the resuming CLI (median / p95)",
                      f"{s['resume_wall_s']['median']:.1f} s / {s['resume_wall_s']['p95']:.1f} s",
                      f"to its first model call: {s['resume_to_first_llm_call_s']['median']:.1f} s"))
    if d := _load(out, "tools"):
        c, r = d["summary"]["cost"], d["summary"]["resume"]
        table.append((f"Tool call as a durable task ({c['calls_per_run']} calls over {c['calls_per_run']} steps, "
                      "0 ms latency), median",
                      f"{c['durable_call_ms']['median']:.1f} ms/call; model turn {c['durable_turn_ms']['median']:.1f} ms",
                      f"plain function call {c['plain_call_ms'] * 1000:.1f} us (**{c['call_ratio']}x**), through "
                      f"`Tool.invoke` {c['plain_invoke_ms']:.2f} ms ({c['call_ratio_vs_invoke']}x); the same loop "
                      f"not durable: {c['plain_loop_call_ms']['median']:.2f} ms/call, "
                      f"{c['plain_loop_turn_ms']['median']:.1f} ms/turn ({c['turn_ratio']}x)"))
        table.append((f"Resume with tools after SIGKILL ({r['trials']} trials, {r['calls_per_run']} calls each): "
                      "side effects repeated",
                      f"**{r['side_effects_repeated_total']}**",
                      f"resumes completed {r['resumes_completed']}/{r['trials']}, failed naming a call cut by the kill "
                      f"{r['resumes_failed_naming_an_unfinished_call']}; tool calls done before kill median "
                      f"{r['tool_calls_finished_before_kill']['median']:.0f}; model turns asked again "
                      f"{r['turns_asked_again_total']}"))
    if d := _load(out, "context_tokens"):
        s = d["summary"]
        table.append((f"Prompt tokens, naive / dependencies-only ({s['all']['plans']} plans >= 3 tasks)",
                      f"{s['all']['naive_over_deps']:.2f}x ({s['all']['saved_fraction'] * 100:.0f}% saved)",
                      f"DAGs {s['dag']['naive_over_deps']:.2f}x, chains {s['chain']['naive_over_deps']:.2f}x; per plan "
                      f"p95 {s['all']['per_plan_ratio']['p95']:.2f}x"))
    for d in (_load(out, "startup"), _load(out / LOADED_STARTUP, "startup")):
        if d and "local_server_warm_first_llm_call_s" in d["summary"]:
            table.append(_local_server_row(d))
    if d := _load(out, "startup"):
        s = d["summary"]
        table.append(("Start-up to first model call, running server, PLANFLOW_SERVER=temporary (Prefect's temporary server)",
                      f"{s['running_server_first_llm_call_s'].get('median', float('nan')):.1f} s",
                      f"with a Prefect API server: {s['with_prefect_api_first_llm_call_s'].get('median', float('nan')):.1f} s; "
                      f"import alone {s['import_only_s'].get('median', float('nan')):.1f} s"))
        table.append(("Start-up to first node, embedded model (default)",
                      f"{s['embedded_node_started_s'].get('median', float('nan')):.1f} s",
                      f"whole 1-task run {s['embedded_wall_s'].get('median', float('nan')):.1f} s"))
        other = s.get("embedded_tokens_per_s_other_threads", {})
        table.append((f"Embedded SmolLM2 tokens/s (default {s.get('embedded_threads', '?')} thread(s) / "
                      f"{s.get('embedded_other_threads', '?')})",
                      f"{s['embedded_tokens_per_s'].get('median', float('nan')):.1f} / "
                      f"{other.get('median', float('nan')):.1f}",
                      f"server start {s['embedded_server_start_s']:.1f} s"))
    if d := _load(out, "plan_quality"):
        s = d["summary"]
        table.append((f"Plan quality, {d['params']['model']} ({s['requests']} dev requests): edge F1 median / mean",
                      f"{s['edge_f1'].get('median', float('nan')):.2f} / {s['edge_f1'].get('mean', float('nan')):.2f}",
                      f"chain baseline {s['chain_baseline_edge_f1'].get('mean', float('nan')):.2f} (mean)"))
        table.append(("Plan quality: node-count error (model - gold), median; repair rate; compile failures",
                      f"{s['node_count_error'].get('median', float('nan')):+g}",
                      f"repairs {s['repair_rate']}, compile failures {s['compile_failure_rate']}"))
    if d := _load(out, "first_answer"):
        s, n = d["summary"], d["summary"]["runs"]
        table.append((f"First answer, embedded model ({n} goals): non-empty answer free of markup / "
                      "distinct task descriptions / tasks free of markup",
                      f"{round(s['answer_non_empty_and_free_of_markup'] * n)}/{n} / "
                      f"{round(s['distinct_task_descriptions'] * n)}/{n} / "
                      f"{round(s.get('task_descriptions_free_of_markup', float('nan')) * n)}/{n}",
                      f"tasks per plan median {s['tasks_per_plan'].get('median', float('nan')):.0f}; "
                      f"plan + answer {s['seconds_per_run'].get('median', float('nan')):.0f} s median at load "
                      f"{d['machine'].get('loadavg_1m', '?')}"))
    return table


def _local_server_row(d: dict[str, Any]) -> tuple[str, str, str]:
    s, nan = d["summary"], float("nan")
    load = d["machine"].get("loadavg_1m", nan)
    loaded = f" (machine loaded: load {load:.1f} on 2 cores)" if load > 3 else ""
    cpu = s.get("local_server_warm_cli_cpu_s", {})
    return (f"Start-up to first model call, local Prefect server running (the default after the first run){loaded}",
            f"**{s['local_server_warm_first_llm_call_s'].get('median', nan):.1f} s**"
            + (f"; the CLI's own CPU by then {cpu['median']:.1f} s" if cpu.get("n") else ""),
            f"same run: temporary server {s['running_server_first_llm_call_s'].get('median', nan):.1f} s"
            + (f" (CPU {s['running_server_cli_cpu_s']['median']:.1f} s)" if s.get("running_server_cli_cpu_s", {}).get("n")
               else "")
            + f", import alone {s['import_only_s'].get('median', nan):.1f} s; first run ever (the CLI starts the server, "
            f"which migrates a new database) {s['local_server_first_ever_first_llm_call_s'].get('median', nan):.0f} s")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    print("| figure | Planflow | baseline / context |")
    print("| --- | --- | --- |")
    for figure, ours, other in rows(out):
        print(f"| {figure} | {ours} | {other} |")
    if (run := out / "run_all.json").exists():
        data = json.loads(run.read_text())
        print(f"\nFull run: {data['total_wall_s'] / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in data['wall_s'].items())}).")


if __name__ == "__main__":
    main()
