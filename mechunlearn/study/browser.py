"""`check_page`: open an HTML file in headless Chromium and report what a reader would see go
wrong — JavaScript errors, plots that did not render, requests that leave the machine.

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no port, no websocket library.
Each check uses a fresh profile folder, removed afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechunlearn.figures import CHROMIUM_FLAGS, CHROMIUM_HINT, chromium

LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "chrome-extension:")

SETTLE_SECONDS = 1.0
"""How long every figure must stay laid out with nothing newly drawn before an undrawn one counts as failed."""

_PLOTS_JS = """(() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return {
    total: divs.length,
    rendered: divs.filter(d => d._fullLayout && d.querySelector('.main-svg') && d.querySelectorAll('.main-svg .trace, .main-svg .hm image').length > 0).length,
    laid_out: divs.filter(d => d._fullLayout && d.querySelector('.main-svg')).length,
    figure_errors: document.querySelectorAll('.figure-error').length,
    title: document.title,
  };
})()"""


@dataclass(frozen=True)
class PageCheck:
    """What headless Chromium saw on a page."""

    title: str
    """The page's ``<title>``."""
    plots: int
    """Plotly figures on the page."""
    rendered: int
    """Of those, figures that drew their SVG."""
    figure_errors: int
    """Figures the report could not draw (its ``.figure-error`` boxes)."""
    js_errors: list[str] = field(default_factory=list)
    """Uncaught exceptions, ``console.error`` calls and error log entries."""
    external_requests: list[str] = field(default_factory=list)
    """Requests to anything but local files and inline data (a self-contained page makes none)."""

    @property
    def ok(self) -> bool:
        """No errors, no external requests, every figure drawn."""
        return not self.js_errors and not self.external_requests and not self.figure_errors and self.rendered == self.plots


class _Pipe:
    """A DevTools protocol connection over Chromium's debugging pipe."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


def check_page(path: str | Path, *, timeout: float = 90.0) -> PageCheck:
    """Load ``path`` in headless Chromium, wait until its plotly figures have drawn (or
    ``timeout`` seconds), and report JS errors, figures drawn and external requests."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no page at {path}")
    browser = chromium()
    if browser is None:
        raise RuntimeError(f"no Chromium on PATH; {CHROMIUM_HINT.split(' or ')[0]}")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def wire_fds() -> None:  # in the child: Chromium reads fd 3 and writes fd 4
        read_end = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
        write_end = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    with tempfile.TemporaryDirectory(prefix="mechunlearn-chromium-") as profile:
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=wire_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(proc, to_chrome_w, from_chrome_r)
        try:
            return _inspect(pipe, path, timeout)
        finally:
            try:
                pipe.send("Browser.close", timeout=10)
            except (RuntimeError, TimeoutError, OSError):
                pass
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _inspect(pipe: _Pipe, path: Path, timeout: float) -> PageCheck:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Page.navigate", {"url": path.as_uri()}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout)
    deadline = time.monotonic() + timeout
    last, steady_since = None, time.monotonic()
    while True:  # plotly draws asynchronously after load; poll until every figure has drawn
        state = pipe.send("Runtime.evaluate", {"expression": _PLOTS_JS, "returnByValue": True}, session=session)["result"]["value"]
        now = time.monotonic()
        if (state["rendered"], state["laid_out"]) != last:
            last, steady_since = (state["rendered"], state["laid_out"]), now
        # done when all drew, or when every figure is laid out and nothing changed for a second
        # (an empty figure lays out but never draws a trace: no need to wait for the deadline)
        if state["rendered"] >= state["total"] or (state["laid_out"] >= state["total"] and now - steady_since > SETTLE_SECONDS) or now > deadline:
            break
        time.sleep(0.2)
    errors, external = [], []
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", "error"))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                external.append(url)
    return PageCheck(state["title"], state["total"], state["rendered"], state["figure_errors"], errors, external)
