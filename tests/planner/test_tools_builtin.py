"""The built-in tools: a calculator that is not `eval`, a workspace that cannot be
left, and HTTP that is off unless a host is allowed (against a real local server)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from planner.tools import Tool, ToolArgumentError, ToolCallError, builtin_tools
from planner.tools.builtin import FILE_READ_MAX, calculator


def tools_by_name(workspace: Path, **kwargs) -> dict[str, Tool]:
    return {t.name: t for t in builtin_tools(workspace, **kwargs)}


def call(t: Tool, **arguments) -> str:
    return asyncio.run(t.invoke(arguments))


def fails(t: Tool, **arguments) -> str:
    with pytest.raises(ToolCallError) as info:
        call(t, **arguments)
    assert "\n" not in str(info.value)
    return str(info.value)


class TestCatalogue:
    def test_without_http_allow(self, tmp_path: Path) -> None:
        tools = builtin_tools(tmp_path / "ws")
        assert [t.name for t in tools] == ["calculator", "read_file", "write_file", "list_files"]
        assert {t.origin for t in tools} == {"builtin"}
        assert all(t.idempotent for t in tools)
        assert not (tmp_path / "ws").exists()  # created lazily

    def test_with_http_allow(self, tmp_path: Path) -> None:
        tools = tools_by_name(tmp_path, http_allow=["example.org"])
        assert (tools["http_get"].idempotent, tools["http_post"].idempotent) == (True, False)
        assert tools["http_post"].parameters["required"] == ["url", "body"]
        assert tools_by_name(tmp_path, http_allow=[" ", ""]).keys().isdisjoint({"http_get", "http_post"})


class TestCalculator:
    @pytest.fixture
    def calc(self, tmp_path: Path) -> Tool:
        return tools_by_name(tmp_path)["calculator"]

    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("1 + 2 * 3", "7"),
            ("(1 + 2) * 3 / 4", "2.25"),
            ("7 // 2, 7 % 2", None),  # a tuple: not arithmetic
            ("2 ** 10", "1024"),
            ("sqrt(16) + abs(-2)", "6.0"),
            ("round(pi, 3)", "3.142"),
            ("floor(2.7) + ceil(2.1)", "5"),
            ("log10(1000) + log(e) + log(8, 2)", "7.0"),
            ("min(3, 1, 2) + max(3, 1, 2)", "4"),
            ("pow(2, 5)", "32"),
            ("factorial(5)", "120"),
            ("1 < 2", "True"),
        ],
    )
    def test_arithmetic_and_functions(self, calc: Tool, expression: str, expected: str | None) -> None:
        if expected is None:
            fails(calc, expression=expression)
        else:
            assert call(calc, expression=expression) == expected

    def test_trigonometry_in_radians(self, calc: Tool) -> None:
        assert abs(float(call(calc, expression="sin(pi / 2) + cos(0) + tan(0)")) - 2.0) < 1e-12

    def test_still_a_plain_function(self) -> None:
        assert calculator("6 * 7") == "42"

    @pytest.mark.parametrize(
        ("expression", "reason"),
        [
            ("1 / 0", "division by zero"),
            ("2 +", "invalid syntax"),
            ("x + 1", "unknown name 'x'; known names: pi, e, tau, inf, nan"),
            ("foo(1)", "unknown function 'foo'"),
            ("sqrt(-1)", "math domain error"),
            ("9 ** 9 ** 9", "would have more than 4000 digits"),
            ("pow(10, 5000)", "would have more than 4000 digits"),
            ("factorial(100000)", "factorial takes a whole number up to 1000"),
            ("10 ** 3000 * 10 ** 3000", "the result has more than 4000 digits"),
            ("'a' * 100", "strings are not supported"),
        ],
    )
    def test_errors_are_clear(self, calc: Tool, expression: str, reason: str) -> None:
        message = fails(calc, expression=expression)
        assert message.startswith(f"cannot evaluate {expression!r}: ")
        assert reason in message

    @pytest.mark.parametrize(
        "expression",
        [
            "__import__('os').system('true')",
            "(1).__class__",
            "(1).real",
            "open('/etc/passwd')",
            "eval('1')",
            "[x for x in (1, 2)]",
            "print",
            "x = 1",
            "1; 2",
            "lambda: 1",
        ],
    )
    def test_no_escape_hatches(self, calc: Tool, expression: str) -> None:
        fails(calc, expression=expression)

    def test_huge_expression_refused(self, calc: Tool) -> None:
        assert "the limit is 1000" in fails(calc, expression="1+" * 600 + "1")

    def test_missing_argument_is_an_argument_error(self, calc: Tool) -> None:
        with pytest.raises(ToolArgumentError, match="'expression' is required"):
            call(calc)


class TestWorkspace:
    @pytest.fixture
    def ws(self, tmp_path: Path) -> Path:
        return tmp_path / "ws"

    @pytest.fixture
    def tools(self, ws: Path) -> dict[str, Tool]:
        return tools_by_name(ws)

    def test_write_read_list(self, ws: Path, tools: dict[str, Tool]) -> None:
        assert call(tools["write_file"], path="notes/a.txt", content="héllo") == "wrote 6 bytes to notes/a.txt"
        assert (ws / "notes" / "a.txt").read_text() == "héllo"
        assert call(tools["read_file"], path="notes/a.txt") == "héllo"
        call(tools["write_file"], path="b.md", content="x")
        assert call(tools["list_files"]) == "b.md\nnotes/"
        assert call(tools["list_files"], path="notes") == "notes/a.txt"

    def test_write_replaces_and_leaves_no_temp_files(self, ws: Path, tools: dict[str, Tool]) -> None:
        call(tools["write_file"], path="f.txt", content="first")
        call(tools["write_file"], path="f.txt", content="second")
        assert (ws / "f.txt").read_text() == "second"
        assert sorted(os.listdir(ws)) == ["f.txt"]

    def test_list_creates_the_workspace(self, ws: Path, tools: dict[str, Tool]) -> None:
        assert call(tools["list_files"]) == "the workspace is empty"
        assert ws.is_dir()

    def test_read_is_capped(self, ws: Path, tools: dict[str, Tool]) -> None:
        ws.mkdir()
        (ws / "big.txt").write_bytes(b"a" * (FILE_READ_MAX + 100))
        text = call(tools["read_file"], path="big.txt")
        assert text.startswith("a" * FILE_READ_MAX + "\n[truncated")
        assert text.endswith(f"[truncated: showing the first {FILE_READ_MAX} of {FILE_READ_MAX + 100} bytes]")

    def test_read_errors(self, ws: Path, tools: dict[str, Tool]) -> None:
        (ws / "d").mkdir(parents=True)
        assert fails(tools["read_file"], path="missing.txt") == (
            "no file 'missing.txt' in the workspace; list_files shows what is there"
        )
        assert fails(tools["read_file"], path="d") == "'d' is a directory; list_files shows what is in it"

    @pytest.mark.parametrize("path", ["../x.txt", "a/../../x.txt", "..", "/etc/passwd", "/tmp/x.txt"])
    def test_escapes_refused(self, tmp_path: Path, tools: dict[str, Tool], path: str) -> None:
        expected = f"path {path!r} is outside the workspace; use a relative path inside it"
        assert fails(tools["read_file"], path=path) == expected
        assert fails(tools["write_file"], path=path, content="pwned") == expected
        assert fails(tools["list_files"], path=path) == expected
        assert not (tmp_path / "x.txt").exists()

    def test_symlink_out_refused(self, tmp_path: Path, ws: Path, tools: dict[str, Tool]) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text("secret")
        ws.mkdir()
        (ws / "link").symlink_to(outside)
        (ws / "file_link").symlink_to(outside / "secret.txt")
        (ws / "dangling").symlink_to(outside / "new.txt")
        refused = "is outside the workspace"
        assert refused in fails(tools["read_file"], path="link/secret.txt")
        assert refused in fails(tools["read_file"], path="file_link")
        assert refused in fails(tools["list_files"], path="link")
        assert refused in fails(tools["write_file"], path="link/new.txt", content="x")
        assert refused in fails(tools["write_file"], path="dangling", content="x")
        assert sorted(os.listdir(outside)) == ["secret.txt"]
        assert (outside / "secret.txt").read_text() == "secret"

    def test_symlink_inside_is_fine(self, ws: Path, tools: dict[str, Tool]) -> None:
        call(tools["write_file"], path="real/a.txt", content="ok")
        (ws / "alias").symlink_to(ws / "real")
        assert call(tools["read_file"], path="alias/a.txt") == "ok"

    def test_list_a_file_or_a_missing_dir(self, ws: Path, tools: dict[str, Tool]) -> None:
        call(tools["write_file"], path="a.txt", content="x")
        assert fails(tools["list_files"], path="a.txt") == "'a.txt' is a file; read it with read_file"
        assert "no directory 'nope'" in fails(tools["list_files"], path="nope")


# --- HTTP against a real local server -----------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    posts: list[tuple[str, str, str]] = []

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, b"late")
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": "http://evil.example/"})
        elif self.path == "/echo-auth":
            self._send(200, b"got auth" if self.headers.get("Authorization") == "Bearer s3cret" else b"no auth")
        else:
            self._send(200, b"hello from the test server")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        _Handler.posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self._send(201, b'{"created": true}')


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the timeout test hangs up on the slow handler: a broken pipe is expected


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class TestHttp:
    def http(self, tmp_path: Path, allow: list[str], **kwargs) -> dict[str, Tool]:
        return tools_by_name(tmp_path, http_allow=allow, **kwargs)

    def test_get_from_an_allowed_host(self, tmp_path: Path, server: str) -> None:
        tools = self.http(tmp_path, ["127.0.0.1"])
        assert call(tools["http_get"], url=f"{server}/hello") == "HTTP 200\nhello from the test server"

    def test_headers_are_sent_and_never_echoed(self, tmp_path: Path, server: str) -> None:
        tools = self.http(tmp_path, ["127.0.0.1"])
        out = call(tools["http_get"], url=f"{server}/echo-auth", headers={"Authorization": "Bearer s3cret"})
        assert out == "HTTP 200\ngot auth"
        bad = fails(tools["http_get"], url=f"{server}/", headers={"Authorization": "Bearer s3cret\nX-Injected: 1"})
        assert "s3cret" not in bad and "request failed" in bad

    def test_host_port_entries(self, tmp_path: Path, server: str) -> None:
        port = int(server.rsplit(":", 1)[1])
        assert call(self.http(tmp_path, [f"127.0.0.1:{port}"])["http_get"], url=server).startswith("HTTP 200")
        message = fails(self.http(tmp_path, [f"127.0.0.1:{port + 1}", "example.org"])["http_get"], url=server)
        assert message == (
            f"host '127.0.0.1:{port}' is not allowed"
            f" (allowed: 127.0.0.1:{port + 1}, example.org; set PLANFLOW_HTTP_ALLOW)"
        )

    def test_unlisted_host_refused(self, tmp_path: Path, server: str) -> None:
        tools = self.http(tmp_path, ["example.org", "api.example.com"])
        message = fails(tools["http_get"], url=f"{server}/hello")
        assert message.startswith("host '127.0.0.1:")
        assert message.endswith("is not allowed (allowed: example.org, api.example.com; set PLANFLOW_HTTP_ALLOW)")
        assert "not allowed" in fails(tools["http_post"], url="http://localhost/x", body="{}")

    @pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1/x", "http://"])
    def test_only_http_urls(self, tmp_path: Path, url: str) -> None:
        message = fails(self.http(tmp_path, ["127.0.0.1"])["http_get"], url=url)
        assert "http://" in message

    def test_redirects_are_not_followed(self, tmp_path: Path, server: str) -> None:
        out = call(self.http(tmp_path, ["127.0.0.1"])["http_get"], url=f"{server}/redirect")
        assert out == "HTTP 302 (redirect to http://evil.example/; not followed)\n"

    def test_size_cap(self, tmp_path: Path, server: str) -> None:
        out = call(self.http(tmp_path, ["127.0.0.1"], http_max_bytes=1000)["http_get"], url=f"{server}/big")
        assert out == "HTTP 200\n" + "x" * 1000 + "\n[truncated at 1000 bytes]"

    def test_timeout(self, tmp_path: Path, server: str) -> None:
        tools = self.http(tmp_path, ["127.0.0.1"], http_timeout=0.3)
        started = time.monotonic()
        assert fails(tools["http_get"], url=f"{server}/slow") == "GET 127.0.0.1: timed out after 0.3 s"
        assert time.monotonic() - started < 1.2

    def test_post_body_arrives(self, tmp_path: Path, server: str) -> None:
        _Handler.posts.clear()
        tools = self.http(tmp_path, ["127.0.0.1"])
        out = call(tools["http_post"], url=f"{server}/items", body=json.dumps({"name": "widget"}))
        assert out == 'HTTP 201\n{"created": true}'
        call(tools["http_post"], url=f"{server}/notes", body="plain words", content_type="text/plain")
        assert _Handler.posts == [
            ("/items", "application/json", '{"name": "widget"}'),
            ("/notes", "text/plain", "plain words"),
        ]

    def test_connection_refused(self, tmp_path: Path) -> None:
        message = fails(self.http(tmp_path, ["127.0.0.1"])["http_get"], url="http://127.0.0.1:9/")
        assert message.startswith("GET 127.0.0.1: cannot connect")
