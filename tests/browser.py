"""Headless Chromium driven over the DevTools protocol, for tests and benchmarks of report.html.

No browser is downloaded and no library is needed: Debian's `chromium` package (`apt-get install
chromium`, which .ci/run does where it can) is started with `--remote-debugging-pipe`, and the
protocol's JSON messages travel over two pipes (fd 3 into the browser, fd 4 out of it), each
message ended by a NUL byte. Pages are loaded from file:// like a user opening the report, and
driven through the page's own controls and events.

    with Chromium() as browser:
        browser.open(path.as_uri())
        browser.evaluate("document.title")
        browser.screenshot(tmp_path / "shot.png")

`Chromium()` raises `BrowserUnavailable` (with the reason) where no Chromium can run; tests turn
that into a skip.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)
"""What Chromium needs to run headless in a container, and to reach no network on its own."""
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(RuntimeError):
    """No Chromium on this machine, or it cannot start here (the message says which)."""


def find_chromium() -> str | None:
    """The first Chromium-family executable on PATH (CHROMIUM names one explicitly)."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def _fonts_config(folder: Path) -> Path | None:
    """A fontconfig file adding the Noto Sans CJK font of the `noto-cjk-sans-otc` package (the
    [cjk] extra) to the system's fonts, so Chinese has glyphs on machines without a CJK system
    font (CI containers); None when the package is not installed."""
    try:
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    conf = folder / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{Path(FONT_PATH).parent}</dir>\n"
        f"  <cachedir>{folder / 'fontcache'}</cachedir>\n</fontconfig>\n",
        encoding="utf-8",
    )
    return conf


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol (see the module)."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        """
        Args:
            width: viewport width in CSS pixels.
            height: viewport height (and screenshot height).
            timeout: seconds to wait for any one reply.
        """
        self.width, self.height, self.timeout = width, height, timeout
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self._buffer = b""
        self._proc: subprocess.Popen | None = None
        self._profile = ""

    def __enter__(self) -> Chromium:
        exe = find_chromium()
        if exe is None:
            raise BrowserUnavailable(
                "no Chromium found on PATH (Debian/Ubuntu: apt-get install -y chromium)"
            )
        self._profile = tempfile.mkdtemp(prefix="medsft-chromium-")
        env = dict(os.environ)
        fonts = _fonts_config(Path(self._profile))
        if fonts is not None:
            env["FONTCONFIG_FILE"] = str(fonts)
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # Above the standard descriptors, so that the child can dup2 them onto 3 and 4 whatever
        # numbers os.pipe() returned (dup2 onto its own number would keep close-on-exec).
        child_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD_CLOEXEC, 10)

        def pipes() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self._log = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                [
                    exe,
                    *FLAGS,
                    f"--user-data-dir={self._profile}",
                    f"--window-size={self.width},{self.height}",
                    "--remote-debugging-pipe",
                    "about:blank",
                ],
                preexec_fn=pipes,
                close_fds=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                env=env,
            )
        finally:
            for fd in (to_browser, from_browser, child_in, child_out):
                os.close(fd)
        try:
            self.send("Browser.getVersion", session=False, timeout=30)
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
            self._session = self.send(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                session=False,
            )["sessionId"]
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": self.width,
                    "height": self.height,
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
        except (OSError, TimeoutError, RuntimeError) as err:
            reason = self._stderr_tail() or str(err)
            self.__exit__(None, None, None)
            raise BrowserUnavailable(f"Chromium did not start: {reason}") from None
        return self

    def _stderr_tail(self) -> str:
        self._log.seek(0)
        lines = [
            line
            for line in self._log.read().decode(errors="replace").splitlines()
            if line.strip() and "dbus" not in line.lower()
        ]
        return lines[-1] if lines else ""

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError):
                self.send("Browser.close", session=False, timeout=5)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for fd in (getattr(self, "_to_browser", None), getattr(self, "_from_browser", None)):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_browser = self._from_browser = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
        self._log.close()

    # -- the protocol ----------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one protocol command and return its result (events that arrive meanwhile are
        kept in `events`)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first event named `method` since the last wait (waiting for it if needed)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[: i + 1]
                    return event.get("params", {})
            self.events.append(self._read_message(deadline))

    # -- what tests use ----------------------------------------------------------------------
    def open(self, url: str) -> float:
        """Load `url` and wait for its load event; the seconds it took."""
        self.events.clear()
        start = time.perf_counter()
        result = self.send("Page.navigate", {"url": url})
        if "loaderId" not in result:
            # The same document with another #fragment: no load. Reload it, as a new tab would.
            self.open("about:blank")
            start = time.perf_counter()
            result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")
        return time.perf_counter() - start

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a thrown error raises here)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"page script failed: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed false for {timeout} s")
            time.sleep(0.05)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)


# -- what the tests ask of a report.html -------------------------------------------------------
def blob(page: str) -> dict:
    """The case data a written report.html carries."""
    found = re.search(r'<script type="application/json" id="case-data">(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


def not_blank(png: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels not in the commonest colour) of a screenshot."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    return len(colours), 1 - max(colours)[0] / (image.width * image.height)


def questions_found(browser) -> list[str]:
    """Every question the case browser lists, page after page, clicking `next`."""
    found = []
    while True:
        found += browser.evaluate(
            "[...document.querySelectorAll('#case-list .case .question')].map(e => e.textContent)"
        )
        state = browser.evaluate("window.medsftReport")
        if state["page"] + 1 >= state["pages"]:
            return found
        browser.evaluate(
            "[...document.querySelectorAll('#pager-top button')].find(b => "
            "b.textContent.startsWith('next')).click()"
        )


def choose(browser, control: str, value) -> dict:
    """Set a filter control as a user does (value, then its change event); the browser's state."""
    prop = "checked" if isinstance(value, bool) else "value"
    browser.evaluate(
        f"(() => {{ const c = document.getElementById({control!r}); c.{prop} = {json.dumps(value)};"
        " c.dispatchEvent(new Event('change')); })()"
    )
    return browser.evaluate("window.medsftReport")
