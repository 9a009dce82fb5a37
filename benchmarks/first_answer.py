"""7. First answer: does the embedded default say something a person would accept?

For 20 varied goals (the kind a newcomer types first), plan with the bundled
SmolLM2 exactly as the flow asks (`planning_messages` in the relative form,
`relative_plan_schema(7)`, `EMBEDDED_PLAN_SAMPLING`, one retry with the
compiler's error), then answer the plan's last task as a node would
(`execution_messages`, no upstream results, 128 tokens, stop at
`planner.answers.EMBEDDED_STOP`) and clean it with `planner.answers.clean_answer`.
No Prefect: the planner and the model client only, so it stays fast.

Per goal: the plan compiled; its task descriptions differ from each other and
from the goal; they are free of markup (`<tag`, `{placeholder}`: a penalty pushed
too hard makes the model write those instead of repeating itself); the raw answer is free of markup; the cleaned answer is non-empty
and free of markup (`is_clean_answer`). The summary gives each as a share of runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Result, describe, log

GOALS = (
    "Plan a 3-day trip to Lisbon",
    "Write a short cover letter for a junior data analyst job",
    "Compare renting and buying a flat in a big city",
    "Explain how vaccines train the immune system",
    "Make a weekly meal plan for a vegetarian family of four",
    "Summarise the causes of the French Revolution",
    "Prepare a 30-minute beginner workout at home",
    "Choose a laptop for a computer science student",
    "Organise a birthday party for a 7-year-old",
    "Explain the difference between TCP and UDP",
    "Draft an agenda for a one-hour project kick-off meeting",
    "Give tips for growing tomatoes on a balcony",
    "Plan a budget for a month on 2000 euros",
    "Describe how to change a flat bicycle tyre",
    "Suggest three books for learning Python",
    "Write a polite email asking a landlord to fix the heating",
    "Explain what a hash table is",
    "Plan a study schedule for a maths exam in two weeks",
    "List what to pack for a weekend camping trip",
    "Estimate the cost of painting a two-bedroom flat",
)
NODE_MAX_TOKENS = 128


_TASK_MARKUP = re.compile(r"</?[a-zA-Z!][^\s>]*|\{[^}]*\}?|&#x?[0-9a-fA-F]+;")


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!? ")


async def _runs(goals: tuple[str, ...], base_url: str, model: str) -> list[dict[str, Any]]:
    from planner.answers import EMBEDDED_STOP, clean_answer, is_clean_answer
    from planner.compiler import compile_plan
    from planner.errors import PlanError
    from planner.llm import LLMClient
    from planner.embedded_plan import EMBEDDED_PLAN_SAMPLING, plan_from_relative, relative_plan_schema
    from planner.prompts import execution_messages, planning_messages, planning_retry_messages
    from planner.settings import PlanflowSettings

    settings = PlanflowSettings()
    max_tasks = min(settings.max_tasks, 7)  # flows.plan_and_execute.EMBEDDED_MAX_TASKS
    schema = relative_plan_schema(max_tasks)
    client = LLMClient(base_url=base_url, api_key="embedded", model=model, timeout=300)
    rows = []
    try:
        for i, goal in enumerate(goals):
            t0 = time.monotonic()
            row: dict[str, Any] = {"goal": goal}
            messages, compiled = planning_messages(goal, relative=True), None
            for _ in range(2):
                answer = await client.complete(messages, purpose="plan", max_tokens=settings.plan_max_tokens,
                                               json_schema=schema, extra_body=EMBEDDED_PLAN_SAMPLING)
                try:
                    compiled = compile_plan(plan_from_relative(answer.text), max_tasks=max_tasks)
                    break
                except PlanError as exc:
                    messages = planning_retry_messages(goal, answer.text, str(exc), relative=True)
            row["plan_seconds"] = round(time.monotonic() - t0, 2)
            if compiled is None:
                row.update({"compiled": False, "distinct_tasks": False, "raw_clean": False, "answer_ok": False})
                rows.append(row)
                continue
            tasks = compiled.plan.tasks
            descriptions = [_norm(t.description) for t in tasks]
            row["tasks"] = [t.description for t in tasks]
            row["distinct_tasks"] = len(set(descriptions)) == len(descriptions) and _norm(goal) not in descriptions
            row["tasks_free_of_markup"] = not any(_TASK_MARKUP.search(t.description) for t in tasks)
            last = tasks[-1]
            t1 = time.monotonic()
            node = await client.complete(execution_messages(goal, last, {}, {}, settings.context_chars),
                                         purpose="node", node_id=last.id, max_tokens=NODE_MAX_TOKENS,
                                         extra_body={"stop": list(EMBEDDED_STOP)})
            cleaned = clean_answer(node.text, goal=goal)
            row.update({
                "compiled": True,
                "answer_seconds": round(time.monotonic() - t1, 2),
                "raw_answer": node.text,
                "answer": cleaned,
                "raw_clean": is_clean_answer(node.text),
                "answer_ok": is_clean_answer(cleaned),
            })
            rows.append(row)
            log(f"first_answer {i + 1}/{len(goals)}: {len(tasks)} tasks, distinct {row['distinct_tasks']}, "
                f"answer ok {row['answer_ok']} ({row['plan_seconds']} + {row['answer_seconds']} s)")
    finally:
        await client.aclose()
    return rows


def run(out: Path, quick: bool) -> Result:
    from planner.embedded import EmbeddedModelServer, EmbeddedServerConfig
    from planner.settings import PlanflowSettings

    goals = GOALS[:1] if quick else GOALS
    settings = PlanflowSettings()
    threads = 1  # the machine is shared; one thread is what a loaded 2-core box gives the model
    result = Result("first_answer", quick, {"goals": len(goals), "model": "embedded SmolLM2-135M",
                                            "embedded_threads": threads, "node_max_tokens": NODE_MAX_TOKENS})
    server = EmbeddedModelServer(EmbeddedServerConfig(ctx_size=settings.embedded_ctx, threads=threads)).start()
    try:
        rows = asyncio.run(_runs(goals, server.base_url, server.model))
    finally:
        server.stop()
    n = len(rows)

    def share(key: str) -> float:
        return round(sum(bool(r.get(key)) for r in rows) / n, 4) if n else 0.0

    result["runs"] = rows
    result["summary"] = {
        "runs": n,
        "compiled": share("compiled"),
        "answer_non_empty_and_free_of_markup": share("answer_ok"),
        "raw_answer_free_of_markup": share("raw_clean"),
        "distinct_task_descriptions": share("distinct_tasks"),
        "task_descriptions_free_of_markup": share("tasks_free_of_markup"),
        "accepted": round(sum(bool(r.get("answer_ok") and r.get("distinct_tasks") and r.get("tasks_free_of_markup"))
                            for r in rows) / n, 4) if n else 0,
        "tasks_per_plan": describe([len(r["tasks"]) for r in rows if r.get("compiled")]),
        "seconds_per_run": describe([r["plan_seconds"] + r.get("answer_seconds", 0) for r in rows]),
    }
    result.write(out)
    return result
