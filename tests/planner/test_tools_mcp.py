"""`planner.tools.mcp` against a real MCP server (tests/support/mcp_server.py) in a subprocess.

No mocks: the servers are real processes speaking stdio or streamable HTTP. Each
test drives its own event loop with `asyncio.run`; starting the test server costs
about two seconds, so one test walks through many calls on one server.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from planner.tools.base import NAME_PATTERN, ToolArgumentError, ToolCallError, Toolbox, ToolSetupError
from planner.tools.mcp import MCPConnections, MCPServerSpec, MCPTool, _tool_name, open_mcp_servers

SERVER_SCRIPT = Path(__file__).resolve().parent.parent / "support" / "mcp_server.py"
SERVER = shlex.join([sys.executable, str(SERVER_SCRIPT)])
SECRET = "sk-MCPSECRETMARKER42"


def by_short_name(connections: MCPConnections) -> dict[str, MCPTool]:
    return {tool.remote_name: tool for tool in connections.tools}


class TestSpec:
    @pytest.mark.parametrize(
        "text,name",
        [
            ("python tests/support/mcp_server.py", "mcp_server"),
            ("files=python srv.py --root /tmp", "files"),
            ("npx -y @modelcontextprotocol/server-filesystem@1.0 /tmp", "server-filesystem"),
            ("uvx mcp-server-fetch", "mcp-server-fetch"),
            ("python3 -m company.tools.server", "server"),
            ("/opt/bin/my.server --flag", "my_server"),
            ("https://mcp.example.com/mcp", "mcp_example_com"),
        ],
    )
    def test_names(self, text: str, name: str) -> None:
        assert MCPServerSpec.parse(text).name == name

    def test_command_and_url(self) -> None:
        spec = MCPServerSpec.parse("srv='python' 'my server.py' --x")
        assert (spec.name, spec.command, spec.url) == ("srv", ("python", "my server.py", "--x"), None)
        url = MCPServerSpec.parse(f"api=https://me:{SECRET}@host.example:8443/mcp?token={SECRET}")
        assert url.url and url.name == "api" and not url.command
        assert url.target == "https://host.example:8443/mcp" and SECRET not in url.target

    @pytest.mark.parametrize("text", ["", "   ", "name=", "python 'unclosed", "http:///nohost"])
    def test_unusable_specs(self, text: str) -> None:
        with pytest.raises(ToolSetupError, match="MCP server"):
            MCPServerSpec.parse(text)

    def test_tool_names_fit_openai_and_stay_unique(self) -> None:
        used: set[str] = set()
        assert _tool_name("files", "read.file", used) == "files__read_file"
        assert _tool_name("files", "read_file", used) == "files__read_file_2"
        long_a, long_b = _tool_name("s", "x" * 100 + "a", used), _tool_name("s", "x" * 100 + "b", used)
        assert long_a != long_b
        for name in used:
            assert len(name) <= 64 and re.match(NAME_PATTERN, name)


class TestStdioServer:
    def test_tools_calls_errors_and_death(self, tmp_path: Path) -> None:
        record_file = tmp_path / "record.txt"

        async def go() -> None:
            async with await open_mcp_servers(
                [f"test={SERVER}"], env={"MCP_RECORD_FILE": str(record_file)}
            ) as connections:
                tools = by_short_name(connections)
                assert sorted(t.name for t in connections.tools) == [
                    "test__add", "test__die", "test__fail", "test__record", "test__sleep",
                ]
                assert {name: t.idempotent for name, t in tools.items()} == {
                    "add": True, "sleep": True, "record": False, "die": False, "fail": False,
                }
                add = tools["add"]
                assert add.origin == "mcp server 'test'" and add.description == "Add two integers."
                assert add.parameters["properties"].keys() == {"a", "b"}
                assert add.openai_tool()["function"]["name"] == "test__add"

                assert await add.invoke({"a": 2, "b": 3}) == "5"
                # From many tasks at once, and from another thread's event loop.
                assert await asyncio.gather(*(add.invoke({"a": i, "b": 1}) for i in range(5))) == [
                    "1", "2", "3", "4", "5",
                ]
                other_loop: list[str] = []
                worker = threading.Thread(target=lambda: other_loop.append(asyncio.run(add.invoke({"a": 7, "b": 8}))))
                worker.start()
                await asyncio.to_thread(worker.join, 10)
                assert other_loop == ["15"]

                assert await tools["record"].invoke({"text": "one"}) == "recorded one"
                await tools["record"].invoke({"text": "two"})
                with pytest.raises(ToolArgumentError, match="text"):
                    await tools["record"].invoke({"txt": "nothing happens"})
                assert record_file.read_text().splitlines() == ["one", "two"]

                with pytest.raises(ToolCallError, match="the fail tool always fails"):
                    await tools["fail"].invoke({})

                # A caller that gives up cancels the call; the server stays usable.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(tools["sleep"].invoke({"seconds": 30}), 0.3)
                assert await add.invoke({"a": 1, "b": 1}) == "2"

                started = time.monotonic()
                with pytest.raises(ToolCallError, match="MCP server 'test' is gone") as died:
                    await tools["die"].invoke({})
                assert not isinstance(died.value, ToolArgumentError)
                with pytest.raises(ToolCallError, match="MCP server 'test' is gone"):
                    await add.invoke({"a": 1, "b": 1})
                assert time.monotonic() - started < 5
            started = time.monotonic()
            await connections.aclose()  # again, after the server died: quick and harmless
            with pytest.raises(ToolCallError, match="gone"):
                await add.invoke({"a": 1, "b": 1})
            assert time.monotonic() - started < 2

        asyncio.run(go())

    def test_same_derived_name_gets_a_suffix_and_toolbox_closes(self) -> None:
        async def go() -> None:
            connections = await open_mcp_servers([SERVER, SERVER])
            names = sorted(t.name for t in connections.tools if t.remote_name == "add")
            assert names == ["mcp_server_2__add", "mcp_server__add"]
            assert [s.name for s in connections.servers] == ["mcp_server", "mcp_server_2"]
            box = Toolbox(connections.tools)  # no clash: the prefixes differ
            results = [await box[n].invoke({"a": 1, "b": 2}) for n in names]
            assert results == ["3", "3"]
            started = time.monotonic()
            await box.aclose()  # closing any tool stops all the servers
            assert time.monotonic() - started < 8
            with pytest.raises(ToolCallError, match="gone"):
                await box[names[0]].invoke({"a": 1, "b": 2})

        asyncio.run(go())


class TestSetupFailures:
    def test_unreachable_url(self) -> None:
        with pytest.raises(ToolSetupError, match=r"MCP server 'api' \(http://127.0.0.1:1/mcp\) could not be reached"):
            asyncio.run(open_mcp_servers(["api=http://127.0.0.1:1/mcp"], startup_timeout=5))

    def test_missing_command(self) -> None:
        started = time.monotonic()
        with pytest.raises(ToolSetupError, match=r"MCP server 'ghost' \(no-such-mcp-server-xyz --x\) could not start"):
            asyncio.run(open_mcp_servers(["ghost=no-such-mcp-server-xyz --x"]))
        assert time.monotonic() - started < 5

    def test_server_that_exits_at_once_shows_its_stderr_and_the_others_are_stopped(self) -> None:
        code = "import sys; print('boom: no config file', file=sys.stderr); sys.exit(2)"
        before = {p.pid for p in psutil.Process().children(recursive=True)}  # the session's own servers
        started = time.monotonic()
        with pytest.raises(ToolSetupError, match="MCP server 'quitter'.*could not start.*boom: no config file"):
            asyncio.run(open_mcp_servers([SERVER, f"quitter={shlex.join([sys.executable, '-c', code])}"]))
        assert time.monotonic() - started < 8
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        assert not left  # the good server was stopped too

    def test_silent_server_times_out(self) -> None:
        code = "import time; time.sleep(60)"
        started = time.monotonic()
        with pytest.raises(ToolSetupError, match="MCP server 'mute'.*did not answer within 0.5 s"):
            asyncio.run(open_mcp_servers([f"mute={shlex.join([sys.executable, '-c', code])}"], startup_timeout=0.5))
        assert time.monotonic() - started < 8

    def test_env_values_never_appear_in_messages(self) -> None:
        code = "import os, sys; print('token is', os.environ['API_TOKEN'], file=sys.stderr); sys.exit(1)"
        with pytest.raises(ToolSetupError) as info:
            asyncio.run(open_mcp_servers([shlex.join([sys.executable, "-c", code])], env={"API_TOKEN": SECRET}))
        assert "token is [redacted]" in str(info.value) and SECRET not in str(info.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, "the HTTP test server exited"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.kill()
        proc.wait(5)


class TestStreamableHttp:
    def test_listed_called_and_gone(self, http_server: tuple[str, subprocess.Popen[bytes]]) -> None:
        url, proc = http_server

        async def go() -> None:
            async with await open_mcp_servers([url], startup_timeout=10) as connections:
                tools = by_short_name(connections)
                assert tools["add"].name == "127_0_0_1__add" and tools["add"].idempotent
                assert await tools["add"].invoke({"a": 2, "b": 3}) == "5"
                with pytest.raises(ToolCallError, match="the fail tool always fails"):
                    await tools["fail"].invoke({})
                proc.kill()
                proc.wait(5)
                started = time.monotonic()
                with pytest.raises(ToolCallError, match="MCP server '127_0_0_1'"):
                    await asyncio.wait_for(tools["add"].invoke({"a": 1, "b": 1}), 15)
                assert time.monotonic() - started < 5

        asyncio.run(go())
