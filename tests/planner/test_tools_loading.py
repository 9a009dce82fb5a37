"""`load_tools`: every module-level tool of a dotted module or a .py file, and a
one-line `ToolSetupError` naming the spec and the cause when that cannot work."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from planner.errors import UserInputError
from planner.tools import FunctionTool, ToolSetupError, load_tools, load_tools_from
from planner.tools.loading import module_name_for

TOOLS_SOURCE = textwrap.dedent(
    '''
    from collections.abc import Mapping
    from typing import Any

    from planner.tools import FunctionTool, Tool, tool

    @tool
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    def helper(x: int) -> int:
        return x

    class Constant(Tool):
        name, description, origin, idempotent = "constant", "Always 7.", "test", True
        parameters = {"type": "object", "properties": {}, "required": []}

        async def invoke(self, arguments: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
            return "7"

    constant = Constant()
    doubled = FunctionTool(lambda n: n * 2, name="double")
    also_shout = shout  # the same tool twice: listed once

    @tool(idempotent=True)
    async def add(a: int, b: int) -> int:
        """Add."""
        return a + b
    '''
)


@pytest.fixture(autouse=True)
def _forget_imported_modules() -> Iterator[None]:
    """The modules these tests write are dropped afterwards, so tests cannot see each other's
    (only those: dropping a library's lazily imported module would duplicate its classes)."""
    yield
    for name in [n for n in sys.modules if n.startswith(("planflow_tools_", "acme_", "needs_dep"))]:
        del sys.modules[name]


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


class TestFromAFile:
    def test_collects_every_tool_in_definition_order(self, tmp_path: Path) -> None:
        path = write(tmp_path / "my_tools.py", TOOLS_SOURCE)
        tools = load_tools(str(path))
        assert [t.name for t in tools] == ["shout", "constant", "double", "add"]
        assert tools[0].origin == "module planflow_tools_my_tools"
        assert sys.modules["planflow_tools_my_tools"].__file__ == str(path)
        assert asyncio.run(tools[3].invoke({"a": 2, "b": 3})) == "5"

    def test_relative_path_and_stable_module_name(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write(tmp_path / "my-tools.v2.py", TOOLS_SOURCE)
        monkeypatch.chdir(tmp_path)
        first = load_tools("./my-tools.v2.py")
        assert first[0].origin == "module planflow_tools_my_tools_v2"
        assert module_name_for(Path("/elsewhere/my-tools.v2.py")) == "planflow_tools_my_tools_v2"
        again = load_tools("my-tools.v2.py")  # same file: imported once, same objects
        assert all(a is b for a, b in zip(first, again, strict=True))

    def test_a_file_named_like_a_stdlib_module_does_not_shadow_it(self, tmp_path: Path) -> None:
        import json

        tools = load_tools(str(write(tmp_path / "json.py", TOOLS_SOURCE)))
        assert tools and sys.modules["json"] is json

    def test_load_tools_from_keeps_order_across_specs(self, tmp_path: Path) -> None:
        a = write(tmp_path / "a_tools.py", TOOLS_SOURCE)
        b = write(
            tmp_path / "b_tools.py",
            '''
            from planner.tools import tool

            @tool
            def only_b() -> str:
                """B."""
                return "b"
            ''',
        )
        assert [t.name for t in load_tools_from([str(b), str(a)])] == ["only_b", "shout", "constant", "double", "add"]
        assert load_tools_from([]) == []


class TestFromADottedModule:
    def test_imports_and_collects(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write(tmp_path / "acme_pkg" / "__init__.py", "")
        write(tmp_path / "acme_pkg" / "tools.py", TOOLS_SOURCE)
        monkeypatch.syspath_prepend(str(tmp_path))
        tools = load_tools("acme_pkg.tools")
        assert [t.name for t in tools] == ["shout", "constant", "double", "add"]
        assert tools[0].origin == "module acme_pkg.tools"
        assert isinstance(tools[2], FunctionTool)

    def test_reexported_tools_count(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write(tmp_path / "acme_reexport" / "__init__.py", "from acme_reexport.impl import shout\n")
        write(tmp_path / "acme_reexport" / "impl.py", TOOLS_SOURCE)
        monkeypatch.syspath_prepend(str(tmp_path))
        assert [t.name for t in load_tools("acme_reexport")] == ["shout"]


class TestErrors:
    def check(self, spec: str, expected: str) -> None:
        with pytest.raises(ToolSetupError) as info:
            load_tools(spec)
        message = str(info.value)
        assert "\n" not in message
        assert message == expected or message.startswith(expected), message
        assert isinstance(info.value, UserInputError)  # exit code 2: the user's to fix

    def test_missing_file(self, tmp_path: Path) -> None:
        spec = str(tmp_path / "nope.py")
        self.check(spec, f"--tools {spec}: no such file; pass a .py file or a dotted module name")

    def test_missing_relative_file_says_where_it_looked(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        self.check("nope.py", f"--tools nope.py: no such file (looked for {tmp_path.resolve() / 'nope.py'})")

    def test_not_a_python_file(self, tmp_path: Path) -> None:
        spec = str(write(tmp_path / "tools.txt", "x = 1\n"))
        self.check(spec, f"--tools {spec}: not a .py file")

    def test_missing_module(self) -> None:
        self.check("no_such_pkg_xyz.tools", "--tools no_such_pkg_xyz.tools: no module named 'no_such_pkg_xyz.tools'")

    def test_import_raises(self, tmp_path: Path) -> None:
        spec = str(write(tmp_path / "broken.py", "from planner.tools import tool\nx = undefined_name + 1\n"))
        self.check(spec, f"--tools {spec}: importing it raised NameError: name 'undefined_name' is not defined")
        assert "planflow_tools_broken" not in sys.modules

    def test_syntax_error(self, tmp_path: Path) -> None:
        spec = str(write(tmp_path / "bad_syntax.py", "def f(:\n    pass\n"))
        self.check(spec, f"--tools {spec}: importing it raised SyntaxError: ")

    def test_missing_dependency_inside_a_module_is_an_import_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write(tmp_path / "needs_dep.py", "import not_installed_dep_xyz\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        self.check(
            "needs_dep",
            "--tools needs_dep: importing it raised ModuleNotFoundError: No module named 'not_installed_dep_xyz'",
        )

    def test_a_bad_tool_in_the_module(self, tmp_path: Path) -> None:
        spec = str(write(tmp_path / "bad_name.py", "from planner.tools import tool\ntool(name='a b')(lambda: 1)\n"))
        self.check(spec, f"--tools {spec}: importing it raised ToolSetupError: tool name 'a b'")

    def test_no_tools(self, tmp_path: Path) -> None:
        spec = str(write(tmp_path / "plain.py", "def f() -> int:\n    return 1\n"))
        self.check(
            spec,
            f"--tools {spec}: it defines no tools; decorate functions with @tool (from planner.tools import tool)",
        )

    def test_empty_spec(self) -> None:
        self.check("  ", "--tools: empty value")
