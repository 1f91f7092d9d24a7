"""Debian's Chromium driven over the Chrome DevTools Protocol itself (no Playwright).

Playwright keeps every page it drives "visible" (it turns on focus emulation), so a test
of ``document.visibilityState`` cannot switch tabs with it. Chromium alone, headless,
does: creating a second tab in the window hides the first, activating it again shows it.
This module launches ``/usr/bin/chromium`` with ``--remote-debugging-port=0`` and speaks
CDP over one WebSocket (flattened sessions). ``tests`` is not a package: load it with
:func:`playpulse.testing.load_module`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM = Path("/usr/bin/chromium")
BASE_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
)


class CDPError(RuntimeError):
    """A CDP command failed, or what a test waited for did not come."""


class Browser:
    """One CDP connection to a running Chromium; :meth:`page` attaches to a tab."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=None, open_timeout=10)
        self.ws.__enter__()  # websockets wants the connection used as a context manager
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        """Closes the connection (Chromium itself is stopped by :func:`chromium`)."""
        self.ws.close()

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send a command and return its result; events met meanwhile go to ``events``.
        Raises :class:`CDPError` on an error answer or after 30 s."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + 30
        while True:
            answer = self._receive(deadline)
            if answer is None:
                raise CDPError(f"{method}: no answer within 30 s")
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))
            if "method" in answer:
                self.events.append(answer)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            raw = self.ws.recv(timeout=remaining)
        except TimeoutError:
            return None
        return dict(json.loads(raw))

    def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 30
    ) -> dict[str, Any]:
        """The first event (seen already or coming) that ``predicate`` accepts; removes
        it from ``events``. Raises :class:`CDPError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for index, event in enumerate(self.events):
                if predicate(event):
                    return self.events.pop(index)
            message = self._receive(deadline)
            if message is None:
                raise CDPError(f"no matching event within {timeout_s} s")
            if "method" in message:
                self.events.append(message)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds`` (a sleep that keeps reading the socket)."""
        deadline = time.monotonic() + seconds
        while (message := self._receive(deadline)) is not None:
            if "method" in message:
                self.events.append(message)

    def targets(self) -> list[dict[str, Any]]:
        """Every target (tabs, service workers, ...) as ``Target.getTargets`` lists it."""
        return list(self.call("Target.getTargets")["targetInfos"])

    def new_tab(self, url: str = "about:blank") -> str:
        """A new tab in the same window (it becomes the active one); its target id."""
        return str(self.call("Target.createTarget", {"url": url, "newWindow": False})["targetId"])

    def activate(self, target_id: str) -> None:
        """Make a tab the active one of its window (the others become hidden)."""
        self.call("Target.activateTarget", {"targetId": target_id})

    def attach(self, target_id: str, domains: Sequence[str] = ("Runtime",)) -> Page:
        """Attach to any target (a tab, a service worker) and enable ``domains``."""
        session = str(
            self.call("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
                "sessionId"
            ]
        )
        page = Page(self, target_id, session)
        for domain in domains:
            page.call(f"{domain}.enable")
        return page

    def page(self, target_id: str) -> Page:
        """Attach to a tab; returns its :class:`Page` (Page and Runtime enabled)."""
        return self.attach(target_id, ("Page", "Runtime"))


class Page:
    """A target attached with its own session."""

    def __init__(self, browser: Browser, target_id: str, session: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command in this page's session."""
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The JSON value of ``expression``; raises :class:`CDPError` if it throws."""
        result = self.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": await_promise,
                "userGesture": True,
            },
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"the page threw: {text}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str, timeout_s: float = 30) -> None:
        """Go to ``url`` and wait for its load event."""
        self.browser.events = [
            e for e in self.browser.events if e.get("method") != "Page.loadEventFired"
        ]
        self.call("Page.navigate", {"url": url})
        self.browser.wait_event(
            lambda e: (
                e.get("method") == "Page.loadEventFired" and e.get("sessionId") == self.session
            ),
            timeout_s,
        )

    def events(self, method: str) -> list[dict[str, Any]]:
        """The params of the events of this session named ``method`` received so far."""
        return [
            e["params"]
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def wait_until(self, expression: str, timeout_s: float = 20) -> Any:
        """Evaluate ``expression`` every 50 ms until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"{expression!r} stayed falsy for {timeout_s} s")
            self.browser.pump(0.05)


@contextlib.contextmanager
def chromium(args: Sequence[str] = (), headless: str = "--headless") -> Iterator[Browser]:
    """Chromium with ``args`` on a fresh profile; yields a connected :class:`Browser`.

    The process is killed at the end and its profile removed. Raises :class:`CDPError`
    (with Chromium's output) when it does not open its DevTools port within 30 s.
    """
    profile = Path(tempfile.mkdtemp(prefix="playpulse-chromium-"))
    log = profile.parent / (profile.name + ".log")
    command = [str(CHROMIUM), headless, *BASE_ARGS, *args]
    command += [f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    browser: Browser | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                raise CDPError(f"chromium did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        browser = Browser(f"ws://127.0.0.1:{port}{path}")
        yield browser
    finally:
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()
        # Chromium's own process group (start_new_session): the browser, its zygote and
        # its renderers, nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
        log.unlink(missing_ok=True)
