"""Find the tools a user named with `--tools` / `PLANFLOW_TOOLS`: a dotted module or a `.py` file.

A file is imported under a module name derived from its stem (`planflow_tools_<stem>`)
and kept in `sys.modules`, so its tools' module, and with it their origin and
pickled references, is the same on every run and resume.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from planner.tools.base import Tool, ToolSetupError

__all__ = ["load_tools", "load_tools_from", "module_name_for"]

FILE_MODULE_PREFIX = "planflow_tools_"
"""Prefixed so a file named `json.py` or `tools.py` cannot shadow a real module."""


def module_name_for(path: Path) -> str:
    """The stable module name a tools file is imported under."""
    stem = re.sub(r"\W", "_", path.stem) or "module"
    return FILE_MODULE_PREFIX + stem


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec or spec.startswith(".")


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _import_file(spec: str) -> ModuleType:
    path = Path(spec).expanduser().resolve()
    if not path.is_file():
        where = "" if str(path) == spec else f" (looked for {path})"
        raise ToolSetupError(f"--tools {spec}: no such file{where}; pass a .py file or a dotted module name")
    if path.suffix != ".py":
        raise ToolSetupError(f"--tools {spec}: not a .py file; pass a .py file or a dotted module name")
    name = module_name_for(path)
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded  # imported already: the same module, the same tool objects
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ToolSetupError(f"--tools {spec}: Python cannot import this file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise ToolSetupError(f"--tools {spec}: importing it raised {_cause(e)}") from e
    return module


def _import_dotted(spec: str) -> ModuleType:
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        # Only a missing `spec` (or a parent of it) means "not found"; a module
        # missing inside it is an import error of the user's code.
        if e.name and (spec == e.name or spec.startswith(e.name + ".")):
            raise ToolSetupError(
                f"--tools {spec}: no module named {spec!r}"
                " (is it installed or on PYTHONPATH? a file needs its .py path)"
            ) from e
        raise ToolSetupError(f"--tools {spec}: importing it raised {_cause(e)}") from e
    except (Exception, SystemExit) as e:
        raise ToolSetupError(f"--tools {spec}: importing it raised {_cause(e)}") from e


def load_tools(spec: str) -> list[Tool]:
    """Every module-level `Tool` in the module or file `spec`, in definition order."""
    spec = spec.strip()
    if not spec:
        raise ToolSetupError("--tools: empty value; pass a dotted module name or a .py path")
    module = _import_file(spec) if _is_path(spec) else _import_dotted(spec)
    tools: list[Tool] = []
    for value in vars(module).values():  # a module's dict keeps definition order
        if isinstance(value, Tool) and not any(value is t for t in tools):
            tools.append(value)
    if not tools:
        raise ToolSetupError(
            f"--tools {spec}: it defines no tools; decorate functions with @tool (from planner.tools import tool)"
        )
    return tools


def load_tools_from(specs: Sequence[str]) -> list[Tool]:
    """The tools of every spec, in order (name clashes are the `Toolbox`'s to report)."""
    tools: list[Tool] = []
    for spec in specs:
        tools.extend(load_tools(spec))
    return tools
