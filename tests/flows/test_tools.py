"""Nodes that act (issue 11), in-process: the real flow, real Prefect, the real HTTP fake
model server scripted turn by turn, user tool modules written to a temporary directory,
a real local HTTP server and a real MCP server subprocess.

Each test's tools record what they were called with in a file of their own, so the tests
count side effects where they happen, not where the engine says they happened.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.fake_openai import Reply, ToolCall, tool_results
from support.flows import plan_json, route, run_flow

from planner.cache_keys import idempotency_key
from planner.errors import RunFailedError, UserInputError
from planner.tools import ToolSetupError

REPO_ROOT = Path(__file__).resolve().parents[2]
MCP_SERVER = REPO_ROOT / "tests" / "support" / "mcp_server.py"


# -- helpers --------------------------------------------------------------------------------


def tool_module(tmp_path: Path, body: str, name: str = "test_tools") -> tuple[str, Path]:
    """Write a `@tool` module to `tmp_path`; its tools append JSON lines to the returned log
    via `log(...)`. Returns (the module's .py path, the log's path)."""
    log = tmp_path / f"{name}.log"
    header = textwrap.dedent(
        f"""
        import asyncio, json, time
        from planner.tools import tool

        LOG = {str(log)!r}

        def log(**fields):
            with open(LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(fields) + "\\n")
        """
    )
    path = tmp_path / f"{name}.py"
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return str(path), log


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def tool_messages(body: dict) -> list[tuple[str, str]]:
    """(tool_call_id, content) of every tool result a request carries, in order."""
    return list(tool_results(body).items())


def offered(body: dict) -> dict[str, dict]:
    """The tools a request offered the model: name -> parameters schema."""
    return {t["function"]["name"]: t["function"]["parameters"] for t in body.get("tools") or []}


def rows(ledger, run_key: str, node_id: str) -> list[tuple]:
    return [
        (r.step, r.call_index, r.tool, json.loads(r.arguments), r.result, r.error, r.finished_at is not None, r.idempotent)
        for r in ledger.tool_calls(run_key, node_id)
    ]


def calls(*calls: ToolCall) -> Reply:
    return Reply(tool_calls=list(calls))


ONE_NODE = plan_json(("a", []))


# -- the loop -------------------------------------------------------------------------------


class TestTheLoop:
    def test_a_node_uses_two_tools_over_three_steps(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(
            tmp_path,
            '''
            @tool
            def lookup(city: str) -> str:
                """Today's temperature in a city, in Celsius."""
                log(tool="lookup", city=city)
                return {"Oslo": "12"}[city]

            @tool
            def convert(celsius: float) -> float:
                """Celsius to Fahrenheit."""
                log(tool="convert", celsius=celsius)
                return celsius * 9 / 5 + 32
            ''',
        )
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(ToolCall("lookup", {"city": "Oslo"}, id="call_1")),
            calls(ToolCall("convert", {"celsius": 12}, id="call_2")),
            "Oslo is 53.6 F",
        )
        state, result = run_flow("weather in Oslo", run_key=run_key, tools=[path])
        assert state.is_completed(), result
        assert result["answer"] == "Oslo is 53.6 F"

        turns = fake_llm.calls_for("node:a")
        assert len(turns) == 3
        assert [tool_messages(t.body) for t in turns] == [
            [],
            [("call_1", "12")],
            [("call_1", "12"), ("call_2", "53.6")],
        ]
        # each tool result follows the assistant turn that asked for it
        roles = [m["role"] for m in turns[2].body["messages"]]
        assert roles[-4:] == ["assistant", "tool", "assistant", "tool"]
        tools = offered(turns[0].body)
        assert {"lookup", "convert", "calculator", "read_file", "write_file", "list_files"} <= set(tools)
        assert tools["lookup"]["properties"] == {"city": {"type": "string"}}

        assert logged(log) == [{"tool": "lookup", "city": "Oslo"}, {"tool": "convert", "celsius": 12.0}]
        assert rows(ledger, run_key, "a") == [
            (1, 0, "lookup", {"city": "Oslo"}, "12", None, True, False),
            (2, 0, "convert", {"celsius": 12}, "53.6", None, True, False),
        ]

    def test_two_calls_in_one_turn_run_in_parallel(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(
            tmp_path,
            '''
            @tool
            def slow(label: str) -> str:
                """Take half a second."""
                started = time.monotonic()
                time.sleep(0.5)
                log(label=label, started=started, ended=time.monotonic())
                return f"{label} done"
            ''',
        )
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(ToolCall("slow", {"label": "x"}, id="call_x"), ToolCall("slow", {"label": "y"}, id="call_y")),
            "both done",
        )
        state, result = run_flow("two at once", run_key=run_key, tools=[path])
        assert state.is_completed(), result
        spans = {entry["label"]: entry for entry in logged(log)}
        assert set(spans) == {"x", "y"}
        x, y = spans["x"], spans["y"]
        assert x["started"] < y["ended"] and y["started"] < x["ended"], f"the two calls did not overlap: {spans}"
        # results go back in the order the model asked, whichever finished first
        assert tool_messages(fake_llm.calls_for("node:a")[1].body) == [("call_x", "x done"), ("call_y", "y done")]
        assert [(r[0], r[1], r[3], r[4]) for r in rows(ledger, run_key, "a")] == [
            (1, 0, {"label": "x"}, "x done"),
            (1, 1, {"label": "y"}, "y done"),
        ]

    def test_a_validation_error_is_the_observation_and_the_model_corrects_it(
        self, fake_llm, run_key, ledger, tmp_path, monkeypatch
    ):
        path, log = tool_module(
            tmp_path,
            '''
            @tool
            def add(a: int, b: int) -> int:
                """Add two integers."""
                log(a=a, b=b)
                return a + b
            ''',
        )
        monkeypatch.setenv("PLANFLOW_TOOLS", path)  # from the environment this time
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(ToolCall("add", {"a": "two", "b": 3}, id="call_bad")),
            calls(ToolCall("add", {"a": 2, "b": 3}, id="call_good")),
            "five",
        )
        state, result = run_flow("add two and three", run_key=run_key)
        assert state.is_completed(), result
        assert result["answer"] == "five"
        turns = fake_llm.calls_for("node:a")
        (bad_id, bad), = tool_messages(turns[1].body)
        assert bad_id == "call_bad"
        assert bad.startswith("error: bad arguments for add: 'a'"), bad
        assert tool_messages(turns[2].body)[1] == ("call_good", "5")
        assert logged(log) == [{"a": 2, "b": 3}], "the tool ran with bad arguments"
        (first, second) = rows(ledger, run_key, "a")
        assert first[4] is None and first[5].startswith("bad arguments for add")
        assert second[4:6] == ("5", None)


PING = '''
@tool
def ping(n: int) -> str:
    """Ping."""
    log(n=n)
    return f"pong {n}"
'''


def _task_run_names(state) -> set[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            )

    return {r.name for r in asyncio.run(read())}


class TestTheFirstTurn:
    def test_asked_directly_and_kept_as_step_1_only_when_it_asks_for_tools(self, fake_llm, run_key, tmp_path):
        """A first turn cannot be cached on a node's first attempt: no task run of its own unless
        it asks for tools; then it is kept under model_turn's key, and a resume never asks it again."""
        path, log = tool_module(tmp_path, PING)
        fake_llm.script("plan", plan_json(("a", []), ("b", [])))
        fake_llm.script("node:a", "a answers at once")
        fake_llm.script(  # the third reply is the resume's
            "node:b", calls(ToolCall("ping", {"n": 1})), Reply(status=400, error_message="bad turn"), "b is done"
        )
        state, error = run_flow("first turns", run_key=run_key, tools=[path], replan_on_failure=False)
        assert state.is_failed(), error
        names = _task_run_names(state)
        assert not any(name.startswith("a: step") for name in names), names
        # (b's failed step 2 may still carry Prefect's default name when read: only step 1 is checked)
        assert "b: step 1" in names, names

        state, result = run_flow("first turns", run_key=run_key, tools=[path], replan_on_failure=False)
        assert state.is_completed(), result
        assert len(fake_llm.calls_for("node:a")) == 1, "a's answer is the node's result: replayed"
        assert len(fake_llm.calls_for("node:b")) == 3, "b's first turn (kept as step 1) was asked again"
        assert logged(log) == [{"n": 1}]


class TestBounds:
    def test_the_step_budget_fails_the_node_naming_it(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(tmp_path, PING)
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script("node:a", calls(ToolCall("ping", {"n": 1})), calls(ToolCall("ping", {"n": 2})))
        state, error = run_flow("keep pinging", run_key=run_key, tools=[path], max_steps=2, replan_on_failure=False)
        assert state.is_failed()
        assert isinstance(error, RunFailedError), error
        message = str(error)
        assert "task 'a' failed" in message and "used all 2 steps" in message, message
        assert "ping(n=2)" in message, message
        assert len(fake_llm.calls_for("node:a")) == 2
        # the last turn's call is not run: no turn would be left to read its result
        assert logged(log) == [{"n": 1}]
        node = {n.node_id: n for n in ledger.nodes(run_key)}["a"]
        assert node.status == "failed" and "used all 2 steps" in node.error

    def test_the_step_budget_feeds_the_replanner(self, fake_llm, run_key, tmp_path):
        path, _ = tool_module(tmp_path, PING)
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script("node:a", calls(ToolCall("ping", {"n": 1})), calls(ToolCall("ping", {"n": 2})))
        fake_llm.script("replan", _decision("retry_modified", "ask less", [("a", "do a in one go", [])]))
        state, result = run_flow("keep pinging, then stop", run_key=run_key, tools=[path], max_steps=2)
        assert state.is_completed(), result
        assert result["plan_version"] == 2 and result["answer"] == "result of node:v2.1"
        (replan,) = fake_llm.calls_for("replan")
        prompt = replan.body["messages"][-1]["content"]
        assert "used all 2 steps" in prompt, prompt

    def test_a_repeated_identical_call_is_stopped(self, fake_llm, run_key, tmp_path):
        path, log = tool_module(tmp_path, PING)
        fake_llm.script("plan", ONE_NODE)
        # the same arguments written differently are the same call
        fake_llm.script("node:a", calls(ToolCall("ping", {"n": 1})), calls(ToolCall("ping", '{ "n" :  1 }')))
        state, error = run_flow("ping forever", run_key=run_key, tools=[path], replan_on_failure=False)
        assert state.is_failed()
        assert isinstance(error, RunFailedError), error
        assert "the model repeated ping(n=1) at step 2, already answered at step 1" in str(error), error
        assert logged(log) == [{"n": 1}]
        assert len(fake_llm.calls_for("node:a")) == 2, "the loop went on after the repeat"


def _decision(action: str, reason: str, tasks: list[tuple[str, str, list[str]]]) -> str:
    return json.dumps(
        {"action": action, "reason": reason,
         "tasks": [{"id": i, "description": d, "depends_on": deps} for i, d, deps in tasks]}
    )


# -- built-in tools -----------------------------------------------------------------------------


class TestWorkspace:
    def test_paths_out_of_the_workspace_are_refused(self, fake_llm, run_key, tmp_path):
        workspace, outside = tmp_path / "ws", tmp_path / "outside"
        workspace.mkdir(), outside.mkdir()
        (outside / "secret.txt").write_text("top secret")
        (workspace / "link").symlink_to(outside, target_is_directory=True)
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(
                ToolCall("write_file", {"path": "../x", "content": "pwned"}, id="up"),
                ToolCall("read_file", {"path": "/etc/passwd"}, id="absolute"),
                ToolCall("read_file", {"path": "link/secret.txt"}, id="link_read"),
                ToolCall("write_file", {"path": "link/new.txt", "content": "pwned"}, id="link_write"),
                ToolCall("write_file", {"path": "ok.txt", "content": "fine"}, id="inside"),
            ),
            "done",
        )
        state, result = run_flow("escape the workspace", run_key=run_key, workspace=str(workspace))
        assert state.is_completed(), result
        seen = dict(tool_messages(fake_llm.calls_for("node:a")[1].body))
        for call_id in ("up", "absolute", "link_read", "link_write"):
            assert seen[call_id].startswith("error: path ") and "is outside the workspace" in seen[call_id], seen
        assert "top secret" not in json.dumps(seen) and "root:" not in json.dumps(seen)
        assert seen["inside"] == "wrote 4 bytes to ok.txt"
        assert (workspace / "ok.txt").read_text() == "fine"
        assert not (tmp_path / "x").exists()
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
        assert (outside / "secret.txt").read_text() == "top secret"


class _Page(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Page.hits.append(self.path)
        payload = b"hello from the test server"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; yields its base URL."""
    _Page.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class TestHttp:
    def test_not_offered_by_default(self, fake_llm, run_key, web_server):
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script("node:a", calls(ToolCall("http_get", {"url": f"{web_server}/data"}, id="get")), "no web")
        state, result = run_flow("fetch without permission", run_key=run_key)
        assert state.is_completed(), result
        first, second = fake_llm.calls_for("node:a")
        names = set(offered(first.body))
        assert "calculator" in names and not names & {"http_get", "http_post"}, names
        (_, seen), = tool_messages(second.body)
        assert seen.startswith("error: there is no tool named 'http_get'"), seen
        assert _Page.hits == []

    def test_allowed_hosts_are_reachable(self, fake_llm, run_key, web_server, monkeypatch):
        monkeypatch.setenv("PLANFLOW_HTTP_ALLOW", "127.0.0.1")
        port = web_server.rsplit(":", 1)[1]
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(
                ToolCall("http_get", {"url": f"{web_server}/data"}, id="allowed"),
                ToolCall("http_get", {"url": f"http://localhost:{port}/data"}, id="other_host"),
            ),
            "fetched",
        )
        state, result = run_flow("fetch with permission", run_key=run_key)
        assert state.is_completed(), result
        first, second = fake_llm.calls_for("node:a")
        assert {"http_get", "http_post"} <= set(offered(first.body))
        seen = dict(tool_messages(second.body))
        assert seen["allowed"] == "HTTP 200\nhello from the test server"
        assert seen["other_host"].startswith("error: host 'localhost:") and "is not allowed" in seen["other_host"]
        assert _Page.hits == ["/data"]


# -- durability inside one process ---------------------------------------------------------------


class TestIdempotencyKey:
    def test_one_key_per_call_stable_for_the_run_key(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(
            tmp_path,
            '''
            @tool
            def charge(amount: int, idempotency_key: str) -> str:
                """Charge an amount once."""
                log(amount=amount, key=idempotency_key)
                return f"charged {amount}"
            ''',
        )
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script(
            "node:a",
            calls(ToolCall("charge", {"amount": 1}), ToolCall("charge", {"amount": 2})),
            calls(ToolCall("charge", {"amount": 3})),
            "charged three times",
        )
        state, result = run_flow("charge three times", run_key=run_key, tools=[path])
        assert state.is_completed(), result
        # the engine fills the key: the model never sees it in the schema
        assert offered(fake_llm.calls_for("node:a")[0].body)["charge"]["properties"].keys() == {"amount"}
        keys = {entry["amount"]: entry["key"] for entry in logged(log)}
        assert len(set(keys.values())) == 3, f"keys must differ between calls: {keys}"
        where = {1: (1, 0), 2: (1, 1), 3: (2, 0)}
        for amount, (step, index) in where.items():
            assert keys[amount] == idempotency_key(run_key=run_key, node_id="a", step=step, index=index)

        # The same run key again: every turn and call is replayed, nothing is done twice.
        turns_before = len(fake_llm.calls)
        state, again = run_flow("charge three times", run_key=run_key, tools=[path])
        assert state.is_completed(), again
        assert again["answer"] == result["answer"]
        assert len(logged(log)) == 3, "a completed tool call ran again"
        assert len(fake_llm.calls) == turns_before, "a model turn was paid again"


class TestReplanAfterAToolFailure:
    def test_completed_tool_calls_are_kept(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(
            tmp_path,
            '''
            @tool
            def fetch_figures() -> str:
                """Fetch the figures."""
                log(tool="fetch_figures")
                return "figures: 1, 2, 3"

            @tool
            def boom() -> str:
                """Always fails."""
                log(tool="boom")
                raise RuntimeError("exploded")
            ''',
        )
        fake_llm.script("plan", plan_json(("a", []), ("b", ["a"])))
        fake_llm.script("node:a", calls(ToolCall("fetch_figures", id="fetch")), "result of node:a")
        fake_llm.script(
            "node:b", calls(ToolCall("boom", id="boom")), Reply(status=400, error_message="b cannot go on")
        )
        fake_llm.script("replan", _decision("retry_modified", "another way", [("b", "do b another way", ["a"])]))
        state, result = run_flow("fetch then fail", run_key=run_key, tools=[path])
        assert state.is_completed(), result
        assert (result["plan_version"], result["answer"]) == (2, "result of node:v2.1")

        # b's model saw the tool's failure as its observation
        (_, seen), = tool_messages(fake_llm.calls_for("node:b")[1].body)
        assert seen == "error: boom failed: RuntimeError: exploded"
        # a's work, tool call included, was done once and kept through the replan
        assert [e["tool"] for e in logged(log)] == ["fetch_figures", "boom"]
        assert len(fake_llm.calls_for("node:a")) == 2
        assert rows(ledger, run_key, "a") == [(1, 0, "fetch_figures", {}, "figures: 1, 2, 3", None, True, False)]
        (b_row,) = rows(ledger, run_key, "b")
        assert b_row[5] == "boom failed: RuntimeError: exploded"
        nodes = {n.node_id: n.status for n in ledger.nodes(run_key)}
        assert nodes == {"a": "completed", "b": "failed", "v2.1": "completed"}
        (v21,) = fake_llm.calls_for("node:v2.1")
        assert "result of node:a" in v21.body["messages"][-1]["content"]


# -- where tools come from ------------------------------------------------------------------------


class TestMcp:
    def test_an_mcp_servers_tools_are_offered_and_called(self, fake_llm, run_key, ledger, tmp_path, monkeypatch):
        record_file = tmp_path / "mcp-record.txt"
        monkeypatch.setenv("MCP_RECORD_FILE", str(record_file))

        def model(body: dict) -> Reply | str:
            key = route(body)
            if key == "plan":
                return ONE_NODE
            seen = tool_results(body)
            if not seen:
                return calls(
                    ToolCall("mcp_server__add", {"a": 2, "b": 3}, id="add"),
                    ToolCall("mcp_server__record", {"text": "hello"}, id="record"),
                )
            return f"2 + 3 = {seen['add']} ({seen['record']})"

        fake_llm.set_default(model)
        state, result = run_flow(
            "add with MCP", run_key=run_key, mcp=[f"{sys.executable} {MCP_SERVER}"], builtin_tools=False
        )
        assert state.is_completed(), result
        assert result["answer"] == "2 + 3 = 5 (recorded hello)"
        first = fake_llm.calls_for("node:a")[0]
        names = set(offered(first.body))
        assert {"mcp_server__add", "mcp_server__record", "mcp_server__sleep"} <= names, names
        assert "calculator" not in names
        assert offered(first.body)["mcp_server__add"]["properties"].keys() == {"a", "b"}
        assert record_file.read_text() == "hello\n"
        # annotations honoured: add is read-only (safe to repeat), record is not
        assert {r[2]: (r[4], r[7]) for r in rows(ledger, run_key, "a")} == {
            "mcp_server__add": ("5", True),
            "mcp_server__record": ("recorded hello", False),
        }


class TestToolSetup:
    def test_a_module_that_fails_to_import_is_a_user_input_error(self, fake_llm, run_key, tmp_path, monkeypatch):
        broken = tmp_path / "broken_tools.py"
        broken.write_text("from planner.tools import tool\nraise RuntimeError('no config here')\n")
        monkeypatch.setenv("PLANFLOW_TOOLS", str(broken))
        state, error = run_flow("use broken tools", run_key=run_key)
        assert state.is_failed()
        assert isinstance(error, ToolSetupError) and isinstance(error, UserInputError), repr(error)
        assert str(broken) in str(error) and "RuntimeError: no config here" in str(error), error
        assert fake_llm.calls == [], "the model was asked before the tools were known"

    def test_the_parameter_names_the_missing_file(self, fake_llm, run_key, tmp_path):
        missing = tmp_path / "nowhere.py"
        state, error = run_flow("use missing tools", run_key=run_key, tools=[str(missing)])
        assert isinstance(error, ToolSetupError), repr(error)
        assert "nowhere.py" in str(error) and "no such file" in str(error)
        assert not os.path.exists(missing)


class TestRerunAfterAFailedNode:
    def test_turns_and_calls_done_before_the_failure_are_replayed(self, fake_llm, run_key, ledger, tmp_path):
        path, log = tool_module(tmp_path, PING)
        fake_llm.script("plan", ONE_NODE)
        fake_llm.script("node:a", calls(ToolCall("ping", {"n": 1}, id="p1")), Reply(status=400, error_message="no"))
        state, error = run_flow("ping then fail", run_key=run_key, tools=[path], replan_on_failure=False)
        assert isinstance(error, RunFailedError), error
        fake_llm.reset()
        fake_llm.set_default(lambda body: "pinged")
        state, result = run_flow("ping then fail", run_key=run_key, tools=[path], replan_on_failure=False)
        assert state.is_completed(), result
        assert logged(log) == [{"n": 1}], "a completed tool call ran again"
        turns = fake_llm.calls_for("node:a")
        assert [len(tool_messages(t.body)) for t in turns] == [1], "the first turn was paid again"
        assert ledger.tool_calls(run_key, "a")[0].cached
