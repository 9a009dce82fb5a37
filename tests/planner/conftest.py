"""Shared fixtures for the pure-core tests (`planner.*`).

`tests/` holds the `support` package (the FakeOpenAI server). pytest only puts
this directory on `sys.path` (there is no `__init__.py` here), so add `tests/`
itself, once, so `from support.fake_openai import ...` works however pytest is
invoked (`tests/planner`, a single file, or the whole suite).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from support.fake_openai import FakeOpenAI  # noqa: E402

from planner.ledger import Ledger  # noqa: E402


@pytest.fixture(scope="session")
def _shared_fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_openai(_shared_fake_openai: FakeOpenAI) -> FakeOpenAI:
    """One real local OpenAI-compatible HTTP server for the session, reset per test."""
    _shared_fake_openai.reset()
    return _shared_fake_openai


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh SQLite ledger in the test's own directory."""
    led = Ledger(f"sqlite:///{tmp_path / 'ledger' / 'planflow.db'}")
    yield led
    led.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every variable the settings read, so the host environment cannot leak in."""
    for name in list(os.environ):
        if name.startswith(("PLANFLOW_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch
