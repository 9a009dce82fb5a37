"""Fixtures of the fault-injection suite (issue 7).

In-process runs use `support.flows.run_flow` (fast). CLI runs are subprocesses; those
that reach Prefect point PREFECT_API_URL at this session's Prefect server (the same
temporary server the in-process runs use) instead of starting one each (~10 s per
run on this machine): a SIGKILLed CLI then leaves the server alive, as in production,
and a TCP proxy in front of it can take the API away mid-run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultkit import Cli, TcpProxy


@pytest.fixture
def run_key() -> str:
    return f"fault-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """The session's Prefect API (started now if no in-process run started it yet)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=180)
    return server.api_url


@pytest.fixture
def cli(fake_llm, prefect_api_url: str, tmp_path: Path) -> Iterator[Cli]:
    """The CLI against the fake model (env from `fake_llm`) and the session's Prefect API."""
    runner = Cli({**os.environ, "PREFECT_API_URL": prefect_api_url}, tmp_path)
    yield runner
    runner.close()


@pytest.fixture
def api_proxy(prefect_api_url: str) -> Iterator[TcpProxy]:
    """A cuttable TCP path to the session's Prefect API; use f'http://127.0.0.1:{proxy.port}/api'."""
    host_port = prefect_api_url.split("//", 1)[1].split("/", 1)[0]
    proxy = TcpProxy("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()
