"""The UI link's forms, and which Prefect API a run takes, without starting anything (milliseconds)."""

from __future__ import annotations

from flows.local_server import configured_api_url
from flows.ui_links import flow_run_link

RUN = "6eee8da6-e04c-4c7c-9037-973b5863a210"


def test_links_go_to_the_v2_page_that_draws_the_plan(monkeypatch):
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    assert flow_run_link("http://127.0.0.1:4200/api/", RUN) == (
        f"http://127.0.0.1:4200/v2/runs/flow-run/{RUN}?tab=Artifacts")
    assert flow_run_link("https://api.prefect.cloud/api/accounts/a1/workspaces/w2", RUN) == (
        f"https://app.prefect.cloud/account/a1/workspace/w2/runs/flow-run/{RUN}?tab=Artifacts")
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example.org/ui/")
    assert flow_run_link("http://10.0.0.5:4200/api", RUN) == (
        f"https://prefect.example.org/ui/v2/runs/flow-run/{RUN}?tab=Artifacts")


def test_the_users_prefect_api_is_never_overridden(tmp_path):
    """PREFECT_API_URL, else the active profile's API URL: then the local server is not used."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    assert configured_api_url({"PREFECT_HOME": str(home)}) is None
    assert configured_api_url({"PREFECT_HOME": str(home), "PREFECT_API_URL": "http://x:1/api"}) == "http://x:1/api"
    (home / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://team:4200/api"\n[profiles.ephemeral]\n'
    )
    assert configured_api_url({"PREFECT_HOME": str(home)}) == "http://team:4200/api"
    assert configured_api_url({"PREFECT_HOME": str(home), "PREFECT_PROFILE": "ephemeral"}) is None
