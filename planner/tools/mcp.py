"""MCP servers as tools: start (or reach) each server, list its tools, call them.

A spec is what a person writes after `--mcp`: `"COMMAND ARGS"` starts a stdio
server, `"http://HOST/PATH"` reaches a streamable HTTP one, and an optional
`"NAME="` prefix names it (`"files=python srv.py"`). Each server's tools are
offered as `<server>__<tool>`, so two servers cannot collide.

Why a private event loop in a thread: the SDK's sessions live inside anyio
cancel scopes, which must be entered and exited by one task, while the tools are
called from many tasks, and perhaps from other event loops (a Prefect task
runner's threads). So each server's transport and session are held open by one
long-lived task on a loop of our own, and every call is handed to that loop.
A call on a dead server, or a server that never starts, fails promptly with an
error naming it; nothing here waits without a bound.

Environment: a stdio server sees only the SDK's safe variables (HOME, PATH, ...)
plus the `env` given to `open_mcp_servers`; those values never appear in
messages, even when the server prints them to its stderr.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import shlex
import tempfile
import threading
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from planner.llm import redact
from planner.tools.base import Tool, ToolArgumentError, ToolCallError, ToolSetupError

try:
    import anyio
    import jsonschema
    import mcp.types as mcp_types
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # pragma: no cover - mcp is a declared dependency
    raise ImportError(f"MCP tools need the `mcp` package (>=2.3): pip install 'mcp>=2.3,<3' ({exc})") from exc

__all__ = ["MCPConnections", "MCPServerSpec", "MCPTool", "open_mcp_servers"]

_NAME_PREFIX = re.compile(r"^([A-Za-z0-9_-]{1,32})=(.*)$", re.S)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LAUNCHERS = {"node", "deno", "bun", "bunx", "npx", "pnpm", "uv", "uvx", "pipx"}  # and python*
_MAX_TOOL_NAME = 64
_STDERR_TAIL = 300
_CLOSE_WAIT = 10.0  # the SDK's own stdio shutdown is bounded at about 6.5 s


def _sanitize(text: str, fallback: str = "mcp") -> str:
    return _UNSAFE.sub("_", text).strip("_")[:32] or fallback


@dataclass(frozen=True)
class MCPServerSpec:
    """One server as the user named it: a stdio command line or a streamable HTTP URL."""

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None

    @classmethod
    def parse(cls, text: str) -> MCPServerSpec:
        """`"[NAME=]COMMAND ARGS"` (shell-quoted) or `"[NAME=]http(s)://..."`."""
        text = text.strip()
        name = None
        if match := _NAME_PREFIX.match(text):
            name, text = match.group(1), match.group(2).strip()
        if not text:
            raise ToolSetupError("an MCP server spec is empty; give a command ('python server.py') or an http(s) URL")
        if re.match(r"(?i)^https?://", text):
            host = urlsplit(text).hostname
            if not host:
                raise ToolSetupError(f"the MCP server URL {_display_url(text)!r} has no host; fix the URL")
            return cls(name=name or _sanitize(host), url=text)
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ToolSetupError(f"cannot split the MCP server command ({exc}); check its quotes") from None
        if not argv:
            raise ToolSetupError("an MCP server spec is empty; give a command ('python server.py') or an http(s) URL")
        return cls(name=name or _derive_name(argv), command=argv)

    @property
    def target(self) -> str:
        """What messages show: the command line, or the URL without credentials or query."""
        return _display_url(self.url) if self.url else shlex.join(self.command)


def _derive_name(argv: Sequence[str]) -> str:
    """A short name: a script's stem, a launched package's name, or the command's basename."""
    for arg in argv[1:]:
        if re.search(r"\.(py|js|mjs|cjs|ts)$", arg):
            return _sanitize(PurePath(arg).stem)
    launcher = PurePath(argv[0]).name.lower()
    if launcher in _LAUNCHERS or launcher.startswith("python"):
        rest = [a for a in argv[1:] if not a.startswith("-") and a not in ("run", "exec", "dlx")]
        if rest:  # "python -m pkg.server" -> "server", "npx -y @org/server-files@1" -> "server-files"
            package = rest[0][0] + rest[0][1:].split("@")[0]
            return _sanitize(PurePath(package).name.rsplit(".", 1)[-1])
    return _sanitize(PurePath(argv[0]).name)


def _display_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _unique(name: str, used: set[str], limit: int) -> str:
    """`name`, or `name_2`, `name_3`... (shortened to `limit`) so it is not in `used`; records it."""
    candidate, n = name[:limit], 1
    while candidate in used:
        n += 1
        suffix = f"_{n}"
        candidate = name[: limit - len(suffix)] + suffix
    used.add(candidate)
    return candidate


def _tool_name(server: str, tool: str, used: set[str]) -> str:
    """`server__tool` in OpenAI's alphabet; too long, it keeps a hash of the original."""
    name = f"{server}__{_UNSAFE.sub('_', tool) or 'tool'}"
    if len(name) > _MAX_TOOL_NAME:
        name = f"{name[: _MAX_TOOL_NAME - 9]}_{hashlib.sha1(f'{server}/{tool}'.encode()).hexdigest()[:8]}"
    return _unique(name, used, _MAX_TOOL_NAME)


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _root_cause(exc)
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        return "it closed the connection"
    if isinstance(exc, MCPError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Server:
    """One server's connection: held open by one task on the connections' loop."""

    def __init__(self, spec: MCPServerSpec, env: Mapping[str, str], loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self._env = dict(env)
        self._loop = loop
        self._session: ClientSession | None = None
        self._stop: asyncio.Event | None = None
        self._ended: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._gone: str | None = None
        # The server's stderr, for the tail an error message quotes; a file, as the subprocess needs a fd.
        self._errlog: IO[str] | None = (
            tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") if spec.command else None
        )

    # -- on the connections' loop ----------------------------------------------
    async def open(self, startup_timeout: float) -> list[mcp_types.Tool]:
        """Start the holder task; return the server's tools once it answered, or raise `ToolSetupError`."""
        self._stop, self._ended = asyncio.Event(), asyncio.Event()
        ready: asyncio.Future[list[mcp_types.Tool]] = self._loop.create_future()
        self._task = asyncio.create_task(self._hold(ready, startup_timeout), name=f"mcp:{self.spec.name}")
        try:  # the holder has its own deadline; this outer one only guards against a stuck spawn
            return await asyncio.wait_for(asyncio.shield(ready), startup_timeout + _CLOSE_WAIT)
        except asyncio.TimeoutError:
            self._task.cancel()
            raise self._setup_error(f"did not answer within {startup_timeout:g} s") from None
        except ToolSetupError:
            raise
        except Exception as exc:
            raise self._setup_error(_describe(exc)) from None

    async def _hold(self, ready: asyncio.Future[list[mcp_types.Tool]], startup_timeout: float) -> None:
        assert self._stop is not None and self._ended is not None
        try:
            # One scope around everything, so the transport's scopes nest inside it; its
            # deadline bounds the start and is lifted once the server has answered.
            with anyio.CancelScope(deadline=anyio.current_time() + startup_timeout) as scope:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._transport())
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    tools = await _list_tools(session)
                    scope.deadline = math.inf
                    self._session = session
                    ready.set_result(tools)
                    await self._stop.wait()
            if scope.cancelled_caught and not ready.done():
                ready.set_exception(self._setup_error(f"did not answer within {startup_timeout:g} s"))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(self._setup_error(_describe(exc)))
            if not isinstance(_root_cause(exc), Exception):
                raise
        finally:
            self._session = None
            self._gone = self._gone or "its connection was closed"
            self._ended.set()
            if not ready.done():
                ready.set_exception(self._setup_error("closed before it answered"))

    def _transport(self) -> Any:
        if self.spec.url:
            return streamable_http_client(self.spec.url)
        params = StdioServerParameters(command=self.spec.command[0], args=list(self.spec.command[1:]), env=self._env)
        return stdio_client(params, errlog=self._errlog)  # type: ignore[arg-type]

    async def _call(self, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        session, ended = self._session, self._ended
        if session is None or ended is None or self._gone:
            raise self._gone_error(self._gone or "it is not connected")
        call = asyncio.ensure_future(session.call_tool(tool, arguments))
        waiter = asyncio.ensure_future(ended.wait())
        try:  # the holder may end (closed, crashed) while the call waits for an answer
            await asyncio.wait({call, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not call.done():
                call.cancel()
        if not call.done() or call.cancelled():
            raise self._gone_error(self._gone or "its connection was closed")
        exc = call.exception()
        if exc is None:
            return call.result()
        cause = _root_cause(exc)
        if isinstance(cause, MCPError) and cause.code != mcp_types.CONNECTION_CLOSED:
            raise ToolCallError(self._redact(f"MCP server '{self.spec.name}' rejected the call to {tool}: {cause.message}"))
        if isinstance(cause, MCPError | anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream
                      | OSError | EOFError):
            self._gone = _describe(cause)
            assert self._stop is not None
            self._stop.set()  # reap the process; later calls fail at once
            raise self._gone_error(self._gone)
        raise ToolCallError(self._redact(f"MCP server '{self.spec.name}' failed on {tool}: {_describe(cause)}"))

    async def _close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None and not self._task.done():
            done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_WAIT)
            if not done:  # the SDK's shutdown is bounded; this is the last resort
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1.0)
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None

    # -- from any thread ----------------------------------------------------------
    async def call(self, tool: str, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        """Run one call on the connections' loop; cancelling the caller cancels the call."""
        if self._gone:
            raise self._gone_error(self._gone)
        try:
            future = asyncio.run_coroutine_threadsafe(self._call(tool, arguments), self._loop)
        except RuntimeError:  # the loop is closed: the connections were closed
            raise self._gone_error("the connections were closed") from None
        return await asyncio.wrap_future(future)

    # -- messages -----------------------------------------------------------------
    def _redact(self, text: str) -> str:
        secrets = list(self._env.values())
        if self.spec.url:  # a transport error may quote the whole URL: hide its password and query
            parts = urlsplit(self.spec.url)
            secrets += [parts.password or "", parts.query] + [v for _, v in parse_qsl(parts.query)]
        return redact(text, sorted(secrets, key=len, reverse=True))

    def _stderr_tail(self) -> str:
        if self._errlog is None or self._errlog.closed:
            return ""
        try:
            self._errlog.flush()
            self._errlog.seek(0, os.SEEK_END)
            size = self._errlog.tell()
            self._errlog.seek(max(0, size - 4000))
            lines = [line.strip() for line in self._errlog.read().splitlines() if line.strip()]
        except (OSError, ValueError):
            return ""
        return " | ".join(lines[-4:])[-_STDERR_TAIL:]

    def _setup_error(self, reason: str) -> ToolSetupError:
        tail = self._stderr_tail()
        verb, fix = ("could not be reached", "check the URL and that the server is up") if self.spec.url else (
            "could not start", "check the command by running it by hand")
        message = f"MCP server '{self.spec.name}' ({self.spec.target}) {verb}: {reason}"
        message += f"; its stderr ends: {tail}" if tail else ""
        return ToolSetupError(self._redact(f"{message}; {fix}"))

    def _gone_error(self, reason: str) -> ToolCallError:
        tail = self._stderr_tail()
        message = f"MCP server '{self.spec.name}' is gone: {reason}" + (f"; its stderr ends: {tail}" if tail else "")
        return ToolCallError(self._redact(message))


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server that pages forever is cut off, not followed
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


class MCPTool(Tool):
    """One tool of an MCP server, offered as `<server>__<tool>`.

    Safe to repeat (`idempotent`) only if the server says so: `readOnlyHint` or
    `idempotentHint` true. Arguments are checked against the tool's input schema
    before the call, so a `ToolArgumentError` means the server saw nothing.
    """

    def __init__(self, server: _Server, info: mcp_types.Tool, name: str, connections: MCPConnections) -> None:
        self._server = server
        self._connections = connections
        self.remote_name = info.name
        self.name = name
        self.description = info.description or info.title or f"The {info.name} tool of MCP server '{server.spec.name}'."
        self.parameters = dict(info.input_schema or {"type": "object", "properties": {}})
        hints = info.annotations
        self.idempotent = bool(hints and (hints.read_only_hint is True or hints.idempotent_hint is True))
        self.origin = f"mcp server '{server.spec.name}'"
        try:
            self._validator: Any = jsonschema.validators.validator_for(self.parameters)(self.parameters)
            self._validator.check_schema(self.parameters)
        except jsonschema.SchemaError:  # the server's schema is broken: let the server judge
            self._validator = None

    async def invoke(self, arguments: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        args = dict(arguments)
        if self._validator is not None:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(args))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "arguments"
                raise ToolArgumentError(f"{self.name}: {where}: {error.message}")
        result = await self._server.call(self.remote_name, args)
        text = _result_text(result)
        if result.is_error:
            raise ToolCallError(text or f"MCP tool {self.remote_name} failed without saying why")
        return text

    async def aclose(self) -> None:
        """Stop all the servers opened with this one (idempotent), so `Toolbox.aclose` is enough."""
        await self._connections.aclose()


def _result_text(result: mcp_types.CallToolResult) -> str:
    """Text parts joined; structured content as JSON when there is no text; other parts named."""
    texts, others = [], []
    for part in result.content or ():
        if isinstance(part, mcp_types.TextContent):
            texts.append(part.text)
        elif isinstance(part, mcp_types.EmbeddedResource) and isinstance(part.resource, mcp_types.TextResourceContents):
            texts.append(part.resource.text)
        else:
            others.append(f"[{getattr(part, 'type', 'content')} {getattr(part, 'mime_type', '') or ''}]".replace(" ]", "]"))
    if texts:
        return "\n".join(texts + others)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return "\n".join(others)


class MCPConnections:
    """Open MCP servers and their tools; close with `aclose()` or use as `async with`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.tools: list[MCPTool] = []
        self.servers: list[MCPServerSpec] = []
        self._loop = loop
        self._thread = thread
        self._servers: list[_Server] = []
        self._closed = False

    async def __aenter__(self) -> MCPConnections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every server (bounded, even for dead or stuck ones) and the private loop."""
        if self._closed:
            return
        self._closed = True
        for server in self._servers:  # new calls fail at once; calls in flight end with their server
            server._gone = server._gone or "the MCP connections were closed"
        if not self._loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._close_all(), self._loop)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), _CLOSE_WAIT + 3.0)
            except (asyncio.TimeoutError, RuntimeError):
                pass  # a server we cannot stop is abandoned, not waited for
            self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 2.0)

    async def _close_all(self) -> None:
        await asyncio.gather(*(s._close() for s in self._servers), return_exceptions=True)


async def open_mcp_servers(
    specs: Sequence[str],
    *,
    startup_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> MCPConnections:
    """Start (or connect to) every server at once and list their tools.

    Raises `ToolSetupError` naming the first server that cannot start, fails or
    stays silent for `startup_timeout` seconds; the others are closed again.
    `env` is added to each stdio server's (minimal) environment.
    """
    parsed = [MCPServerSpec.parse(s) for s in specs]
    used: set[str] = set()
    parsed = [MCPServerSpec(_unique(p.name, used, 32), p.command, p.url) for p in parsed]

    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run_loop, name="planflow-mcp", daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 5.0)
    connections = MCPConnections(loop, thread)
    connections.servers = parsed
    connections._servers = [_Server(spec, env or {}, loop) for spec in parsed]

    async def open_all() -> list[list[mcp_types.Tool] | BaseException]:
        return await asyncio.gather(*(s.open(startup_timeout) for s in connections._servers), return_exceptions=True)

    try:
        listed = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(open_all(), loop))
    except BaseException:
        await connections.aclose()
        raise
    failures = [r for r in listed if isinstance(r, BaseException)]
    if failures:
        await connections.aclose()
        raise failures[0] if isinstance(failures[0], ToolSetupError) else ToolSetupError(_describe(failures[0]))
    names: set[str] = set()
    for server, tools in zip(connections._servers, listed, strict=True):
        assert not isinstance(tools, BaseException)
        connections.tools += [
            MCPTool(server, info, _tool_name(server.spec.name, info.name, names), connections) for info in tools
        ]
    return connections
