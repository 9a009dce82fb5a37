"""The tools every run has unless `--no-builtin-tools`: safe by construction.

- `calculator`: arithmetic through `simpleeval`, never `eval`; no attributes,
  no imports, and powers whose result would be huge are refused.
- `read_file`, `write_file`, `list_files`: confined to the run's workspace; a path
  is resolved (symlinks too) and must land inside the resolved workspace.
- `http_get`, `http_post`: only when hosts are allowed (`PLANFLOW_HTTP_ALLOW`);
  redirects are not followed (the next hop's host would go unchecked), bodies are
  capped, the whole request has one deadline. Request headers may hold secrets:
  they never appear in a result or an error.

Docstrings of the tool functions are what the model reads.
"""

from __future__ import annotations

import ast
import asyncio
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import httpx
import simpleeval

from planner.tools.base import Tool, ToolCallError
from planner.tools.function import FunctionTool

__all__ = ["FILE_READ_MAX", "LIST_MAX", "builtin_tools", "calculator"]

ORIGIN = "builtin"
FILE_READ_MAX = 64 * 1024
"""Bytes `read_file` returns; a model's context is the scarce resource."""
LIST_MAX = 1000
EXPRESSION_MAX = 1000
RESULT_DIGITS_MAX = 4000
"""A power whose result would have more digits is refused before it is computed."""


# --- calculator ------------------------------------------------------------------


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * math.log10(abs(base)) > RESULT_DIGITS_MAX:
            raise simpleeval.NumberTooHigh(f"{base} ** {exponent} would have more than {RESULT_DIGITS_MAX} digits")
    return base**exponent


def _factorial(n: int) -> int:
    if not isinstance(n, int) or n > 1000:
        raise simpleeval.NumberTooHigh("factorial takes a whole number up to 1000")
    return math.factorial(n)


_FUNCTIONS: dict[str, Any] = {
    **{
        name: getattr(math, name)
        for name in (
            "sqrt cbrt exp log log2 log10 sin cos tan asin acos atan atan2 sinh cosh tanh "
            "floor ceil trunc hypot degrees radians gcd lcm isclose"
        ).split()
    },
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "pow": _power,
    "factorial": _factorial,
    "int": int,
    "float": float,
}
_NAMES: dict[str, Any] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf, "nan": math.nan,
                          "True": True, "False": False}  # fmt: skip
_OPERATORS = {**simpleeval.DEFAULT_OPERATORS, ast.Pow: _power}
for _op in (ast.Is, ast.IsNot, ast.In, ast.NotIn):  # identity and membership: not arithmetic
    _OPERATORS.pop(_op, None)
# Only the syntax of arithmetic: no attributes (`x.__class__`), subscripts, f-strings or assignments.
_NODES = (ast.Name, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Constant)


def _evaluator() -> simpleeval.SimpleEval:
    evaluator = simpleeval.SimpleEval(operators=_OPERATORS, functions=_FUNCTIONS, names=_NAMES)
    evaluator.nodes = {node: evaluator.nodes[node] for node in _NODES}
    return evaluator


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, instead of doing the arithmetic in your head.

    Operators: + - * / // % ** and comparisons, with parentheses. Functions: sqrt,
    cbrt, exp, log(x[, base]), log2, log10, sin, cos, tan, asin, acos, atan, atan2,
    sinh, cosh, tanh, floor, ceil, trunc, round(x[, digits]), abs, min, max, pow,
    hypot, degrees, radians, factorial, gcd, lcm. Constants: pi, e, tau, inf.
    Angles are in radians.

    Args:
        expression: One expression, e.g. "sqrt(2) * (3 + 4) ** 2" or "round(1234 / 7, 2)".
    """
    if len(expression) > EXPRESSION_MAX:
        raise ToolCallError(f"the expression is {len(expression)} characters long; the limit is {EXPRESSION_MAX}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        detail = "" if e.msg == "invalid syntax" else f" ({e.msg})"
        raise ToolCallError(f"cannot evaluate {expression!r}: invalid syntax{detail}") from None
    if any(isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes)) for n in ast.walk(tree)):
        raise ToolCallError(f"cannot evaluate {expression!r}: strings are not supported, only numbers")
    evaluator = _evaluator()
    try:
        result = evaluator.eval(expression, previously_parsed=tree.body)
        if isinstance(result, int) and result.bit_length() > RESULT_DIGITS_MAX * 3.33:
            raise simpleeval.NumberTooHigh(f"the result has more than {RESULT_DIGITS_MAX} digits")
        return str(result)
    except simpleeval.NameNotDefined as e:
        reason = f"unknown name {e.name!r}; known names: {', '.join(n for n in _NAMES if n[0].islower())}"
    except simpleeval.FunctionNotDefined as e:
        reason = f"unknown function {e.func_name!r}; known functions: {', '.join(_FUNCTIONS)}"
    except simpleeval.OperatorNotDefined as e:
        reason = f"operator {e.attr!r} is not supported"
    except simpleeval.FeatureNotAvailable:
        reason = "only numbers, operators, the listed functions and constants are allowed"
    except simpleeval.InvalidExpression as e:  # NumberTooHigh, IterableTooLong and the like
        reason = str(e)
    except ZeroDivisionError:
        reason = "division by zero"
    except OverflowError:
        reason = "the result is too large"
    except (ArithmeticError, ValueError, TypeError, RecursionError) as e:
        # ValueError: math domain errors, and ints too long to print
        reason = " ".join(str(e).split())[:300] or type(e).__name__
    raise ToolCallError(f"cannot evaluate {expression!r}: {reason}")


# --- workspace -------------------------------------------------------------------


class Workspace:
    """A directory the model may read and write, and nothing outside it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def resolve(self, path: str) -> Path:
        """The absolute path `path` names inside the workspace, or a `ToolCallError`."""
        outside = f"path {path!r} is outside the workspace; use a relative path inside it"
        if PurePath(path).is_absolute() or path.startswith(("/", "\\")):
            raise ToolCallError(outside)
        root = self.root.resolve()
        # resolve() follows every symlink on the way, so a link out of the workspace is caught here
        target = (root / path).resolve()
        if target != root and root not in target.parents:
            raise ToolCallError(outside)
        return target

    def relative(self, target: Path) -> str:
        return target.relative_to(self.root.resolve()).as_posix() or "."

    def read_file(self, path: str) -> str:
        """Read a text file from the workspace.

        Args:
            path: The file's path relative to the workspace, e.g. "notes/summary.md".
        """
        target = self.resolve(path)
        if target.is_dir():
            raise ToolCallError(f"{path!r} is a directory; list_files shows what is in it")
        try:
            with target.open("rb") as f:
                data = f.read(FILE_READ_MAX + 1)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise ToolCallError(f"no file {path!r} in the workspace; list_files shows what is there") from None
        except OSError as e:
            raise ToolCallError(f"cannot read {path!r}: {e.strerror or type(e).__name__}") from None
        text = data[:FILE_READ_MAX].decode("utf-8", errors="replace")
        if len(data) > FILE_READ_MAX:
            text += f"\n[truncated: showing the first {FILE_READ_MAX} of {max(size, len(data))} bytes]"
        return text

    def write_file(self, path: str, content: str) -> str:
        """Write a text file in the workspace, replacing it if it exists; parent directories are created.

        Args:
            path: The file's path relative to the workspace, e.g. "report/draft.md".
            content: The whole new content of the file.
        """
        target = self.resolve(path)
        if target.is_dir():
            raise ToolCallError(f"{path!r} is a directory; give a file path")
        data = content.encode("utf-8")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # write then rename: a crash leaves the old file or the new one, never half of it
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise ToolCallError(f"cannot write {path!r}: {e.strerror or type(e).__name__}") from None
        return f"wrote {len(data)} bytes to {self.relative(target)}"

    def list_files(self, path: str = ".") -> str:
        """List a directory of the workspace: one path per line, relative to the workspace, directories end with "/".

        Args:
            path: The directory relative to the workspace; "." is the workspace itself.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.resolve(path)
        if not target.exists():
            raise ToolCallError(f"no directory {path!r} in the workspace; list_files('.') shows what is there")
        if not target.is_dir():
            raise ToolCallError(f"{path!r} is a file; read it with read_file")
        entries = sorted(target.iterdir(), key=lambda p: p.name)
        lines = [self.relative(target / e.name) + ("/" if e.is_dir() else "") for e in entries]
        if not lines:
            return f"{self.relative(target)}/ is empty" if target != self.root.resolve() else "the workspace is empty"
        if len(lines) > LIST_MAX:
            lines = lines[:LIST_MAX] + [f"[{len(entries) - LIST_MAX} more not shown]"]
        return "\n".join(lines)


# --- HTTP ------------------------------------------------------------------------


def _parse_allowed(entries: Sequence[str]) -> list[tuple[str, int | None]]:
    """("host", None) allows every port of a host; ("host", 8080) only that port."""
    allowed: list[tuple[str, int | None]] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if "://" in entry:
            url = httpx.URL(entry)
            allowed.append((url.host, url.port))
            continue
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 or entry.startswith("[") else ("", "", "")
        if host and port.isdigit():
            allowed.append((host.strip("[]"), int(port)))
        else:
            allowed.append((entry.strip("[]"), None))
    return allowed


class HttpClient:
    """GET and POST to allowed hosts only, with a size cap and one deadline per request."""

    def __init__(self, allow: Sequence[str], *, max_bytes: int, timeout: float) -> None:
        self.allow_text = ", ".join(e.strip() for e in allow if e.strip())
        self.allowed = _parse_allowed(allow)
        self.max_bytes = max_bytes
        self.timeout = timeout

    def check(self, url: str) -> httpx.URL:
        """The parsed URL if its scheme is http(s) and its host is allowed, else a `ToolCallError`."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise ToolCallError("the URL is not valid; give a full http:// or https:// URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ToolCallError("only http:// and https:// URLs with a host are allowed")
        host = parsed.host.lower()
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not any(h == host and p in (None, port) for h, p in self.allowed):
            shown = host if parsed.port is None else f"{host}:{parsed.port}"
            raise ToolCallError(
                f"host {shown!r} is not allowed (allowed: {self.allow_text}; set PLANFLOW_HTTP_ALLOW)"
            )
        return parsed

    async def request(self, method: str, url: str, headers: dict[str, str] | None, body: bytes | None) -> str:
        parsed = self.check(url)
        try:
            async with asyncio.timeout(self.timeout):
                async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
                    async with client.stream(method, parsed, headers=headers, content=body) as response:
                        data = bytearray()
                        truncated = False
                        async for chunk in response.aiter_bytes():
                            data += chunk
                            if len(data) > self.max_bytes:
                                truncated = True
                                break
        except (TimeoutError, httpx.TimeoutException):
            raise ToolCallError(f"{method} {parsed.host}: timed out after {self.timeout:g} s") from None
        except httpx.ConnectError as e:
            raise ToolCallError(f"{method} {parsed.host}: cannot connect ({' '.join(str(e).split())[:200]})") from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, TypeError) as e:
            # Never the message: an invalid header's error quotes its value.
            raise ToolCallError(f"{method} {parsed.host}: request failed ({type(e).__name__})") from None
        text = bytes(data[: self.max_bytes]).decode(response.encoding or "utf-8", errors="replace")
        status = f"HTTP {response.status_code}"
        if response.is_redirect and "location" in response.headers:
            status += f" (redirect to {response.headers['location']}; not followed)"
        if truncated:
            text += f"\n[truncated at {self.max_bytes} bytes]"
        return f"{status}\n{text}"

    async def http_get(self, url: str, headers: dict[str, str] | None = None) -> str:
        """Fetch a URL with GET; returns "HTTP <status>" and the body. Only allowed hosts can be reached.

        Args:
            url: A full http:// or https:// URL.
            headers: Extra request headers, e.g. {"Accept": "application/json"}.
        """
        return await self.request("GET", url, headers, None)

    async def http_post(
        self, url: str, body: str, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> str:
        """Send a POST request; returns "HTTP <status>" and the response body. Only allowed hosts can be reached.

        Args:
            url: A full http:// or https:// URL.
            body: The request body, e.g. a JSON document.
            headers: Extra request headers.
            content_type: The body's Content-Type.
        """
        sent = dict(headers or {})
        if not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = content_type
        return await self.request("POST", url, sent, body.encode("utf-8"))


def builtin_tools(
    workspace: Path,
    *,
    http_allow: Sequence[str] = (),
    http_max_bytes: int = 65536,
    http_timeout: float = 10.0,
) -> list[Tool]:
    """The built-in tools for one run: calculator, the workspace's files, and HTTP if any host is allowed."""
    ws = Workspace(workspace)
    tools: list[Tool] = [
        FunctionTool(calculator, idempotent=True, origin=ORIGIN),
        FunctionTool(ws.read_file, idempotent=True, origin=ORIGIN),
        FunctionTool(ws.write_file, idempotent=True, origin=ORIGIN),  # same arguments, same file
        FunctionTool(ws.list_files, idempotent=True, origin=ORIGIN),
    ]
    if any(entry.strip() for entry in http_allow):
        http = HttpClient(http_allow, max_bytes=http_max_bytes, timeout=http_timeout)
        tools += [
            FunctionTool(http.http_get, idempotent=True, origin=ORIGIN),
            FunctionTool(http.http_post, idempotent=False, origin=ORIGIN),
        ]
    return tools
