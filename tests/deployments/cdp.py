"""Headless Chromium driven over its DevTools protocol (CDP), for tests that must do
more in the Prefect UI than load a page: wait for text to appear, click a tab or a
button, read what a form shows, take a screenshot. One browser process, one page;
plain JSON messages over a websocket (the `websockets` package Prefect already uses).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from deploykit import free_port

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,900",
]


class PageTimeout(AssertionError):
    """What the test waited for never showed; the message carries what the page did show."""


class Browser:
    """One headless Chromium with one page; `close()` ends its whole process group."""

    def __init__(self, profile: Path, timeout: float = 60) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._ids = itertools.count(1)
        try:
            target = self._page_target(port, timeout)
            self.ws = connect(target, max_size=None, open_timeout=timeout)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _page_target(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium's DevTools did not answer on port {port} (exit {self.proc.poll()})")
            time.sleep(0.2)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; events that arrive meanwhile are dropped (nothing here needs them)."""
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"{expression[:80]}: {details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", f"{url} to load")

    def text(self) -> str:
        """What a person reads on the page (innerText), whitespace collapsed."""
        return " ".join((self.eval("document.body ? document.body.innerText : ''") or "").split())

    def wait_for(self, condition: str, what: str, timeout: float = 60) -> Any:
        """Poll a JS expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise PageTimeout(f"waited {timeout:.0f}s for {what}; the page shows:\n{self.text()[:3000]}")
            time.sleep(0.3)

    def wait_text(self, *texts: str, timeout: float = 60) -> str:
        """Wait until every one of `texts` is on the page; the page's text."""
        wanted = json.dumps(list(texts))
        self.wait_for(
            f"(() => {{ const t = (document.body ? document.body.innerText : '').replace(/\\s+/g, ' ');"
            f" return {wanted}.every(s => t.includes(s)); }})()",
            f"{list(texts)}", timeout,
        )
        return self.text()

    def click(self, label: str, selector: str = "button, [role=tab], [role=menuitem], a") -> None:
        """Click, with the mouse, the first visible element matching `selector` whose text is
        `label` (real mouse events: menus that open on pointerdown ignore `el.click()`)."""
        box = self.eval(
            f"(() => {{ const el = [...document.querySelectorAll({json.dumps(selector)})]"
            f".find(e => e.innerText.trim() === {json.dumps(label)} && e.getClientRects().length);"
            " if (!el) return null; el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if not box:
            raise PageTimeout(f"no {selector!r} labelled {label!r}; the page shows:\n{self.text()[:3000]}")
        x, y = box
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        try:  # Chromium leaves helper processes in its group; end them all
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
