"""Test-session isolation and the shared fixtures: a real OpenAI-compatible HTTP
server with scripted answers, and real Prefect in a throwaway PREFECT_HOME.

The environment is fixed here, before anything imports Prefect, because Prefect
reads its settings at import time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SESSION_DIR = Path(tempfile.mkdtemp(prefix="planflow-tests-"))
for _var in [v for v in os.environ if v.startswith(("OPENAI_", "PLANFLOW_", "PREFECT_"))]:
    del os.environ[_var]
os.environ.update(
    {
        "PREFECT_HOME": str(SESSION_DIR / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # A loaded 2-core machine can take longer than Prefect's default 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "PLANFLOW_HOME": str(SESSION_DIR / "planflow"),
        # No local Prefect server left running by a test run: CLI runs use Prefect's
        # temporary server; tests/cli/test_server.py starts (and stops) its own.
        "PLANFLOW_SERVER": "temporary",
        # Fast retries: the backoff mechanism is Prefect's; its length is not under test.
        "PLANFLOW_RETRY_BACKOFF": "0.05",
        "PLANFLOW_RETRY_JITTER": "0",
    }
)

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from support.fake_openai import FakeOpenAI  # noqa: E402
from support.flows import echo_node, route  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(echo_node, key_fn=route).start()
    yield server
    server.stop()


@pytest.fixture
def fake_llm(_fake_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The session's fake OpenAI server, reset, with the environment pointing at it."""
    _fake_server.reset()
    _fake_server.set_default(echo_node)
    monkeypatch.setenv("OPENAI_BASE_URL", _fake_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    return _fake_server


@pytest.fixture
def ledger():
    from planner.ledger import Ledger
    from planner.settings import PlanflowSettings

    ledger = Ledger(PlanflowSettings().ledger_url)
    yield ledger
    ledger.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)
