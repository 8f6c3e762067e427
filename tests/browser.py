"""Open a local HTML page in headless Chromium (Debian's `chromium`) and report what went wrong.

Chromium is driven over the Chrome DevTools Protocol on `--remote-debugging-pipe` (it reads
NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4), so only the standard
library is needed. Install the browser with tests/install_browser.sh.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT, MAX_HEIGHT = 1400, 900, 16000

# Resolves once the DOM has had no mutation for 500 ms (at most 10 s after it starts), so that
# charts drawn by scripts after the load event (vega-embed) are on the page before it is checked.
_SETTLE = """new Promise(done => {
  let timer; const start = Date.now();
  const quiet = () => { clearTimeout(timer); timer = setTimeout(finish, 500); };
  const observer = new MutationObserver(() => Date.now() - start < 10000 ? quiet() : finish());
  function finish() { observer.disconnect(); document.fonts.ready.then(() => done(true)); }
  observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  quiet();
})"""
_BROKEN_IMAGES = "Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'))"


def chromium_available() -> bool:
    """Whether a `chromium` executable is on PATH."""
    return CHROMIUM is not None


@dataclass
class PageCheck:
    """What check_page saw: console errors and uncaught exceptions, <img> srcs whose naturalWidth is 0."""
    screenshot: Path
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.console_errors and not self.broken_images


class _Pipe:
    """A CDP connection over the two pipes; every wait ends at `deadline` with a TimeoutError."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float, on_event):
        self.out, self.inp, self.deadline, self.on_event = to_browser, from_browser, deadline, on_event
        self.buffer, self.next_id = b"", 0

    def _message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError("chromium did not finish with the page in time")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe (did it crash?)")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.on_event(reply)

    def wait_for(self, method: str) -> None:
        while (event := self._message()).get("method") != method:
            self.on_event(event)
        self.on_event(event)


def _describe(event: dict) -> str | None:
    """The text of an error-level console message, log entry or uncaught exception; None otherwise."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return f"console.{params['type']}: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "uncaught: " + details.get("exception", {}).get("description", details.get("text", ""))
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        entry = params["entry"]
        return f"{entry['source']}: {entry['text']}" + (f" ({entry['url']})" if entry.get("url") else "")
    return None


def _spawn(profile: Path, to_child: int, from_child: int) -> subprocess.Popen:
    """Start chromium with `to_child` as its fd 3 and `from_child` as its fd 4."""
    def remap():  # runs in the child between fork and exec
        read, write = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
        os.dup2(read, 3), os.dup2(write, 4), os.close(read), os.close(write)

    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
               f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-pipe",
               "about:blank"]
    with open(profile / "stderr.log", "wb") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                close_fds=False, preexec_fn=remap, start_new_session=True)


def check_page(page: Path, screenshot: Path, timeout: float = 60) -> PageCheck:
    """Open `page` (a local file) in headless Chromium at 1400 px wide, wait for its load event and
    then for its DOM to stay unchanged for 500 ms (at most 10 s), write a PNG of the whole page (at most 16000 px
    tall) to `screenshot`, and return the console errors, uncaught exceptions and images whose
    naturalWidth is 0. Raises TimeoutError after `timeout` seconds, RuntimeError if chromium fails."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not on PATH (run tests/install_browser.sh)")
    result = PageCheck(Path(screenshot))

    def on_event(event: dict) -> None:
        if (text := _describe(event)) is not None:
            result.console_errors.append(text)

    with tempfile.TemporaryDirectory(prefix="emoprobe-chromium-") as profile:
        to_child, to_browser = os.pipe()
        from_browser, from_child = os.pipe()
        process = _spawn(Path(profile), to_child, from_child)
        os.close(to_child), os.close(from_child)
        try:
            cdp = _Pipe(to_browser, from_browser, time.monotonic() + timeout, on_event)
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.send(f"{domain}.enable", session=session)
            navigation = cdp.send("Page.navigate", {"url": Path(page).resolve().as_uri()}, session)
            if "errorText" in navigation:
                raise RuntimeError(f"chromium could not open {page}: {navigation['errorText']}")
            cdp.wait_for("Page.loadEventFired")
            cdp.send("Runtime.evaluate", {"expression": _SETTLE, "awaitPromise": True}, session)
            broken = cdp.send("Runtime.evaluate", {"expression": _BROKEN_IMAGES, "returnByValue": True}, session)
            result.broken_images = broken["result"]["value"]
            size = cdp.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": max(size["width"], 1), "height": min(max(size["height"], 1), MAX_HEIGHT),
                    "scale": 1}
            shot = cdp.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True},
                            session)
            result.screenshot.write_bytes(base64.b64decode(shot["data"]))
            try:
                cdp.send("Browser.close")
            except (RuntimeError, TimeoutError):
                pass
        except TimeoutError as error:
            raise TimeoutError(f"chromium did not finish with {page} within {timeout:g} s") from error
        except RuntimeError as error:
            if process.poll() is None:
                raise
            log = (Path(profile) / "stderr.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{error}\nchromium exited {process.returncode}; its stderr ends:\n{log}") from error
        finally:
            os.close(to_browser), os.close(from_browser)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # closing the pipe normally ends chromium within a second
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return result
