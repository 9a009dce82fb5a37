"""Planflow's Prefect layer: the plan-and-execute flow, its tasks and the CLI."""
