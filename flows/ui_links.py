"""Links to a flow run in the Prefect UI: the page that draws the run's Mermaid plan.

Prefect 3.9 serves two UIs. The classic one (`/runs/flow-run/<id>`) shows a
markdown artifact's Mermaid block as source text; the V2 UI (`/v2/...`) draws it.
So the link is the V2 flow-run page on its Artifacts tab, where every plan
version is drawn. Prefect Cloud has one UI of its own, under the workspace.

No Prefect import: `planflow runs show` builds links from the ledger alone.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["RunLinks", "flow_run_link", "recorded_run_link", "ui_root"]

V2_SEGMENT = "/v2"
FLOW_RUN_PAGE = "/runs/flow-run/{id}?tab=Artifacts"

_CLOUD_API = re.compile(r"^https://api\.prefect\.(cloud|dev)/api/accounts/([^/]+)/workspaces/([^/]+)/?$")


def ui_root(api_url: str, ui_url: str | None = None) -> str:
    """The UI's base for an API: PREFECT_UI_URL when set, else the API's URL without `/api`."""
    ui_url = ui_url if ui_url is not None else os.environ.get("PREFECT_UI_URL")
    if ui_url:
        return ui_url.rstrip("/")
    root = api_url.rstrip("/")
    return root[: -len("/api")] if root.endswith("/api") else root


def flow_run_link(api_url: str, flow_run_id: str, ui_url: str | None = None) -> str:
    """The V2 UI page of `flow_run_id` on the server at `api_url` (its Artifacts tab: the drawn plan)."""
    page = FLOW_RUN_PAGE.format(id=flow_run_id)
    cloud = _CLOUD_API.match(api_url)
    if cloud and not (ui_url or os.environ.get("PREFECT_UI_URL")):
        domain, account, workspace = cloud.groups()
        return f"https://app.prefect.{domain}/account/{account}/workspace/{workspace}{page}"
    root = ui_root(api_url, ui_url)
    if not root.endswith(V2_SEGMENT):
        root += V2_SEGMENT
    return root + page


def recorded_run_link(api_url: str | None, flow_run_id: str | None) -> str:
    """`Prefect UI: <link>` for a run the ledger recorded, or why it cannot be viewed (one line).

    Asks the recorded API for the flow run (one request), so a link is printed only
    where it opens.
    """
    from flows.local_server import api_reachable

    if not api_url or not flow_run_id:
        return "Prefect UI: none (no flow run recorded for this run)"
    if api_reachable(api_url, f"/flow_runs/{flow_run_id}", timeout=2.0):
        return f"Prefect UI: {flow_run_link(api_url, flow_run_id)}"
    return (
        f"Prefect UI: not viewable now: the Prefect server it ran on ({api_url}) does not have it or is not "
        "running. The local server comes back with its runs on `planflow server start`; Prefect's temporary "
        "server (PLANFLOW_SERVER=temporary) is gone with its command: runs on the local server stay viewable"
    )


NO_UI_ON_TEMPORARY_SERVER = (
    "Prefect UI: none for this run: it ran on Prefect's temporary server, which serves no UI and "
    "stops with this command; `planflow server start` (or no PLANFLOW_SERVER=temporary) keeps runs viewable"
)


class RunLinks:
    """A run's UI link on stderr, once when its flow run starts and once at the end.

    `kind` is the API the run uses (`flows.cli.server.ApiChoice.kind`): Prefect's
    temporary server serves no UI (it starts with PREFECT_UI_ENABLED=0), so there
    is no link to give; the end line says so and how to keep runs viewable.
    """

    def __init__(self, console: Any, kind: str, enabled: bool = True) -> None:
        self._console, self._kind, self._enabled = console, kind, enabled
        self._announced = False

    def announcing(self, flow: Any) -> Any:
        """`flow` with an on-running hook that prints the link as soon as its flow run exists."""
        if not self._enabled or self._kind == "temporary":
            return flow
        return flow.with_options(on_running=[*flow.on_running_hooks, self._on_running])

    def _on_running(self, flow: Any, flow_run: Any, state: Any) -> None:
        if self._announced:  # Running again after a pause: said already
            return
        self._announced = True
        self._print(flow_run_link(_current_api_url(), str(flow_run.id)))

    def at_end(self, run: Any) -> None:
        """The link again, from the ledger's record of the run (None: nothing to link)."""
        if not self._enabled or run is None or not run.flow_run_id or not run.prefect_api_url:
            return
        if self._kind == "temporary":
            self._console.print(NO_UI_ON_TEMPORARY_SERVER, markup=False, highlight=False, soft_wrap=True)
            return
        self._print(flow_run_link(run.prefect_api_url, run.flow_run_id))

    def _print(self, link: str) -> None:
        self._console.print(f"Prefect UI: {link}", markup=False, highlight=False, soft_wrap=True)


def _current_api_url() -> str:
    """The API of the flow run being started (Prefect's temporary server has no setting of its own)."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    context = FlowRunContext.get()
    if context is not None and context.client is not None:
        return str(context.client.api_url)
    return PREFECT_API_URL.value() or ""
