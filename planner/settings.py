"""Settings, read from the environment (prefix `PLANFLOW_`) and passed in explicitly.

The OpenAI endpoint uses the SDK's own variable names (`OPENAI_BASE_URL`,
`OPENAI_API_KEY`) so an existing setup works unchanged. When neither is set,
Planflow uses the embedded model: no key, no network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["EMBEDDED", "PlanflowSettings"]

EMBEDDED = "embedded"
"""The `model` value that selects the bundled SmolLM2 model."""


EMBEDDED_THREADS_MAX = 4
"""More llama.cpp threads do not speed up a 135M model."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_embedded_threads() -> int:
    """llama.cpp threads that spin against a busy Prefect server collapse: measured on
    2 cores with one core busy, 2 threads gave 25 tokens/s and 1 thread 55."""
    return max(1, min(EMBEDDED_THREADS_MAX, usable_cpus() - 1))


def _split(value: object, separator: str) -> object:
    """A list from the environment: a JSON list as pydantic reads it, or `a<sep>b`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(separator) if part.strip()]
    return value


class PlanflowSettings(BaseSettings):
    """Everything a run can be configured with. Every field is an env var."""

    model_config = SettingsConfigDict(env_prefix="PLANFLOW_", extra="ignore", frozen=True)

    def workspace_for(self, run_key: str) -> Path:
        """Where a run's file tools read and write."""
        if self.workspace is not None:
            return self.workspace.expanduser()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_key)[:120]
        return self.home / "workspaces" / safe

    home: Path = Field(
        default=Path("~/.planflow"),
        description="Planflow's own directory: the SQLite ledger and the embedded model's log.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger; default sqlite:///<home>/planflow.db.",
    )
    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "PLANFLOW_BASE_URL"),
        description="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "PLANFLOW_API_KEY"),
        description="API key for the endpoint. Never logged or stored.",
    )
    model: str | None = Field(
        default=None,
        description="Model name; 'embedded' for the bundled SmolLM2; default gpt-4o-mini "
        "with an endpoint, else embedded.",
    )
    max_tasks: int = Field(default=12, ge=1, description="Most tasks a model-made plan may have.")
    max_parallel: int = Field(default=4, ge=1, description="Most nodes running at once.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a node after a transient error.")
    max_replans: int = Field(default=2, ge=0, description="Replans allowed per run after permanent failures.")
    replan_on_failure: bool = Field(default=True, description="Replan after a permanent node failure.")
    on_exhausted: Literal["fail", "ask"] = Field(
        default="fail", description="When no replan is left: fail, or pause and ask a person."
    )
    approve_plan: bool = Field(default=False, description="Pause for a person to review the first plan.")
    pause_timeout: int = Field(default=3600, ge=1, description="Seconds a paused run waits for a person.")
    pause_poll_seconds: int = Field(default=10, ge=1, description="How often a paused run checks for an answer.")
    retry_backoff: float = Field(
        default=1.0, ge=0, description="Base of the exponential backoff between retries, seconds."
    )
    retry_jitter: float = Field(default=0.5, ge=0, description="Jitter factor added to each backoff.")
    retry_after_cap: float = Field(
        default=60.0, ge=0, description="Longest Retry-After (seconds) honoured; longer is capped."
    )
    request_timeout: float = Field(default=120.0, gt=0, description="Timeout of one model call, seconds.")
    plan_max_tokens: int = Field(default=1024, ge=64, description="Completion token cap for planning.")
    node_max_tokens: int = Field(default=512, ge=16, description="Completion token cap for a node.")
    context_chars: int = Field(
        default=4000, ge=100, description="Characters of each dependency's result passed to a node."
    )
    result_chars: int = Field(
        default=20000, ge=100, description="Characters of a node's output kept; the rest is cut."
    )
    task_tags: bool = Field(
        default=False,
        description="Tag each node's task run with run:<key> and plan:v<N>, for filtering task runs by tag "
        "in the UI. Off by default: Prefect asks its API for tag concurrency slots before every tagged "
        "task run, a blocking round trip on each dependency hop (benchmarks hop_profile), and on a "
        "SQLite-backed server that request often gets a 503 and a 2 s retry (measured: +2 s in 13 of "
        "20 small runs; none on PostgreSQL). A run's task runs are already grouped by its flow run.",
    )
    max_steps: int = Field(
        default=8, ge=1, description="Most model turns one node's tool loop may take before it fails."
    )
    builtin_tools: bool = Field(
        default=True, description="Offer the built-in tools (calculator, workspace files, HTTP if allowed)."
    )
    tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Python modules (dotted names or .py paths) whose @tool functions nodes may call; "
        "comma-separated or a JSON list.",
    )
    mcp: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="MCP servers to offer tools from: 'COMMAND ARGS' (stdio) or an http(s) URL; "
        "several separated by ';' or as a JSON list.",
    )
    workspace: Path | None = Field(
        default=None, description="Directory the file tools work in; default <home>/workspaces/<run key>."
    )
    http_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts (host or host:port) the HTTP tools may reach, comma-separated; none by default.",
    )
    tool_timeout: float = Field(default=60.0, gt=0, description="Seconds one tool call may take.")
    server: Literal["local", "temporary"] = Field(
        default="local",
        description="Prefect API for runs when PREFECT_API_URL is not set: 'local' starts (once) and reuses "
        "a Prefect server with its UI that outlives the CLI (`planflow server stop` ends it); 'temporary' "
        "lets Prefect start a temporary server that stops with each command (nothing viewable afterwards).",
    )
    server_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of the local Prefect server (host 127.0.0.1); default 4200 if free, else any free port.",
    )
    embedded_ctx: int = Field(default=8192, ge=512, description="Context size of the embedded model.")
    embedded_threads: int = Field(
        default_factory=default_embedded_threads,
        ge=1,
        description="CPU threads of the embedded model; default one fewer than the CPUs (1 to 4), "
        "leaving a core to Prefect and the flow.",
    )

    @field_validator("tools", "http_allow", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value, ",")

    @field_validator("mcp", mode="before")
    @classmethod
    def _semicolon_list(cls, value: object) -> object:
        return _split(value, ";")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def uses_embedded_model(self) -> bool:
        if self.model is not None:
            return self.model == EMBEDDED
        return self.base_url is None and self.api_key is None

    @property
    def ledger_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'planflow.db'}"

    @property
    def model_name(self) -> str:
        """The model to request from an OpenAI-compatible endpoint."""
        return self.model or "gpt-4o-mini"
