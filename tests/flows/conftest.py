from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def run_key() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
