"""`planner.settings`: environment variables, embedded-model selection, secret handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from planner.settings import EMBEDDED, PlanflowSettings

SECRET = "sk-SETTINGSSECRET999"


class TestEnvironment:
    def test_defaults(self, clean_env: pytest.MonkeyPatch) -> None:
        s = PlanflowSettings()
        assert (s.base_url, s.api_key, s.model, s.max_tasks) == (None, None, None, 12)
        assert s.model_name == "gpt-4o-mini"

    def test_embedded_threads_leave_a_core_free(self, clean_env: pytest.MonkeyPatch) -> None:
        import os

        cpus = len(os.sched_getaffinity(0))
        assert PlanflowSettings().embedded_threads == max(1, min(4, cpus - 1))
        clean_env.setenv("PLANFLOW_EMBEDDED_THREADS", "3")
        assert PlanflowSettings().embedded_threads == 3

    def test_openai_variables_read(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        clean_env.setenv("OPENAI_API_KEY", SECRET)
        clean_env.setenv("PLANFLOW_MAX_TASKS", "7")
        s = PlanflowSettings()
        assert s.base_url == "http://127.0.0.1:9/v1"
        assert s.api_key is not None and s.api_key.get_secret_value() == SECRET
        assert s.max_tasks == 7

    def test_planflow_prefixed_aliases(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("PLANFLOW_BASE_URL", "http://h/v1")
        clean_env.setenv("PLANFLOW_API_KEY", "k-1234")
        s = PlanflowSettings()
        assert s.base_url == "http://h/v1" and s.api_key.get_secret_value() == "k-1234"  # type: ignore[union-attr]

    @pytest.mark.parametrize("value", ["0", "-1", "many"])
    def test_invalid_max_tasks_rejected(self, clean_env: pytest.MonkeyPatch, value: str) -> None:
        clean_env.setenv("PLANFLOW_MAX_TASKS", value)
        with pytest.raises(ValidationError):
            PlanflowSettings()

    def test_home_expanded_and_default_ledger_url(self, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        clean_env.setenv("HOME", str(tmp_path))
        s = PlanflowSettings()
        assert s.home == tmp_path / ".planflow"
        assert s.ledger_url == f"sqlite:///{tmp_path / '.planflow' / 'planflow.db'}"
        clean_env.setenv("PLANFLOW_DATABASE_URL", "postgresql://db/planflow")
        assert PlanflowSettings().ledger_url == "postgresql://db/planflow"

    def test_frozen(self, clean_env: pytest.MonkeyPatch) -> None:
        s = PlanflowSettings()
        with pytest.raises(ValidationError):
            s.max_tasks = 3  # type: ignore[misc]


class TestEmbeddedSelection:
    def test_neither_set_uses_embedded(self, clean_env: pytest.MonkeyPatch) -> None:
        assert PlanflowSettings().uses_embedded_model is True

    @pytest.mark.parametrize("var", ["OPENAI_BASE_URL", "OPENAI_API_KEY"])
    def test_either_set_uses_endpoint(self, clean_env: pytest.MonkeyPatch, var: str) -> None:
        clean_env.setenv(var, "http://x/v1" if "URL" in var else SECRET)
        assert PlanflowSettings().uses_embedded_model is False

    def test_model_embedded_wins_over_endpoint(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("OPENAI_BASE_URL", "http://x/v1")
        clean_env.setenv("OPENAI_API_KEY", SECRET)
        assert PlanflowSettings(model=EMBEDDED).uses_embedded_model is True
        clean_env.setenv("PLANFLOW_MODEL", "embedded")
        assert PlanflowSettings().uses_embedded_model is True

    def test_named_model_uses_endpoint(self, clean_env: pytest.MonkeyPatch) -> None:
        s = PlanflowSettings(model="gpt-4o")
        assert s.uses_embedded_model is False and s.model_name == "gpt-4o"


class TestSecret:
    def test_api_key_never_shown(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("OPENAI_API_KEY", SECRET)
        s = PlanflowSettings()
        for text in (repr(s.api_key), str(s.api_key), repr(s), str(s), s.model_dump_json()):
            assert "SETTINGSSECRET" not in text, text
        assert s.api_key.get_secret_value() == SECRET  # type: ignore[union-attr]


def test_tool_lists_read_from_the_environment(monkeypatch):
    from planner.settings import PlanflowSettings

    monkeypatch.setenv("PLANFLOW_TOOLS", "my_tools.py, pkg.tools")
    monkeypatch.setenv("PLANFLOW_MCP", "python a.py --x 1; npx server")
    monkeypatch.setenv("PLANFLOW_HTTP_ALLOW", "127.0.0.1,example.org:8443")
    settings = PlanflowSettings()
    assert settings.tools == ["my_tools.py", "pkg.tools"]
    assert settings.mcp == ["python a.py --x 1", "npx server"]
    assert settings.http_allow == ["127.0.0.1", "example.org:8443"]
    assert settings.max_steps == 8 and settings.builtin_tools is True
    monkeypatch.setenv("PLANFLOW_MCP", '["python a.py; b"]')
    assert PlanflowSettings().mcp == ["python a.py; b"]
