"""Planflow benchmarks: what durability costs, what parallelism buys, what resume saves.

Run with `python -m benchmarks <name> [--quick] [--out DIR]` or `python -m benchmarks all`.
Each benchmark writes `<name>.json` and `<name>.png` under `--out` (default
`benchmarks/results/`). See benchmarks/README.md.
"""

BENCHMARKS = ("context_tokens", "overhead", "makespan", "dispatch", "hop_profile", "resume", "tools", "startup", "plan_quality", "first_answer")
