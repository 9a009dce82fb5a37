"""The flow run's page in the Prefect UI, opened in headless Chromium (Debian package
`chromium`; scripts/install_test_deps.sh installs it). The screenshot is saved under
the test's output and copied to test-output/ (gitignored) for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from cdp import CHROMIUM, FLAGS
from deploykit import PLAN, TEST_OUTPUT, CompletedRun, PrefectServer

pytestmark = pytest.mark.slow

# The same headless Chromium as the DevTools-driven tests, with time to render each page.
CHROMIUM_FLAGS = [*FLAGS, "--virtual-time-budget=15000"]


def _chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = b"", b"timed out"
    finally:
        try:  # chromium leaves helper processes in its group; end them all
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def page_url(prefect_server: PrefectServer, completed_run: CompletedRun) -> str:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium): run scripts/install_test_deps.sh")
    return f"{prefect_server.url}/runs/flow-run/{completed_run.flow_run['id']}"


def test_flow_run_page_screenshot(page_url: str, completed_run: CompletedRun, tmp_path: Path) -> None:
    shot = tmp_path / "flow-run.png"
    result = _chromium([f"--screenshot={shot}", page_url], tmp_path / "profile")
    assert shot.exists(), f"no screenshot (exit {result.returncode}):\n{result.stderr[-3000:]}"
    TEST_OUTPUT.mkdir(exist_ok=True)
    shutil.copy(shot, TEST_OUTPUT / "flow-run.png")
    assert _png_size(shot) == (1400, 900)
    # A blank page compresses to a few kB; the run page with its graph and logs is far larger.
    assert shot.stat().st_size > 40_000, f"screenshot looks empty ({shot.stat().st_size} bytes)"


def test_flow_run_page_shows_the_run(page_url: str, completed_run: CompletedRun, tmp_path: Path) -> None:
    result = _chromium(["--dump-dom", page_url], tmp_path / "profile")
    dom = result.stdout
    (tmp_path / "flow-run.html").write_text(dom)
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "flow-run.html").write_text(dom)
    assert "<html" in dom, f"no DOM (exit {result.returncode}):\n{result.stderr[-3000:]}"
    assert completed_run.run_key in dom, "the run's name is not on its page"
    assert "Completed" in dom
    assert "plan-and-execute" in dom  # the flow's name, linked from the run's header
    # The task runs of the graph are drawn on a canvas, but the logs name them.
    assert any(task["id"] in dom for task in PLAN["tasks"])


def test_plan_artifact_renders_as_a_mermaid_graph(
    page_url: str, prefect_server: PrefectServer, completed_run: CompletedRun, tmp_path: Path
) -> None:
    """The plan artifact in the V2 UI (under /v2; the V1 UI shows Mermaid as source):
    a drawn flowchart, every node coloured by its final state. (A screenshot of it:
    PLANFLOW_UI_SCREENSHOTS=1 saves test-output/plan-artifact.png too.)"""
    from flows.artifacts import artifact_key

    key = artifact_key("plan-v1", completed_run.run_key)
    r = prefect_server.request("POST", "/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}})
    (collection,) = r.json()
    url = f"{prefect_server.url}/v2/artifacts/artifact/{collection['latest_id']}"
    dom = _chromium(["--dump-dom", url], tmp_path / "profile").stdout
    TEST_OUTPUT.mkdir(exist_ok=True)
    (TEST_OUTPUT / "plan-artifact.html").write_text(dom)
    if os.environ.get("PLANFLOW_UI_SCREENSHOTS") == "1":
        _chromium([f"--screenshot={TEST_OUTPUT / 'plan-artifact.png'}", url], tmp_path / "profile-shot")
    assert 'aria-roledescription="flowchart' in dom, "the Mermaid graph was not drawn"
    completed = re.findall(r'<g class="node default completed" id="([^"]+)"', dom)
    assert len([n for n in completed if "legend_" not in n]) == len(PLAN["tasks"]), completed
    assert any("legend_completed" in n for n in completed), "the legend was not drawn"
    for task in PLAN["tasks"]:
        assert f"{task['id']}: " in dom
