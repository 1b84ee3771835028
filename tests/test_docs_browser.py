"""The built documentation as a reader sees it: headless Chromium, no network.

Each theory page of ``docs/_build/html`` is opened in Debian's ``chromium`` (driven over the
DevTools protocol on a pipe, so no extra Python package is needed) with the network cut off (a
proxy that does not exist) and every request recorded.  The test asserts that

* no request leaves ``file://``; MathJax is served by the site itself and typesets every formula: ``mjx-container`` elements
  exist, no ``\\(`` / ``\\[`` / ``$$`` is left in the visible text, and no formula has a
  MathJax error or an undefined (red) macro;
* theorem boxes show the papers' numbers (a numbered box names its paper);
* nothing is cut off or sticks out sideways at 1280 and 1800 px (tables and badges wrap).

Screenshots of each page are saved to ``docs/_build/screenshots/`` (not committed).  Run with
``make test-browser`` (builds the docs, installs Chromium when missing); marked ``browser``.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "docs" / "_build" / "html"
SHOTS = ROOT / "docs" / "_build" / "screenshots"
WIDTH = 1280
THEORY_PAGES = sorted(p.stem for p in (ROOT / "docs" / "theory").glob("*.md"))
EXTRA_PAGES = ["results/tabular", "checks", "_generated/api/theory"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A minimal DevTools-protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, exe: str):
        self._profile = tempfile.mkdtemp(prefix="pm-chromium-")
        r_cmd, w_cmd = os.pipe()   # we write commands, chromium reads fd 3
        r_evt, w_evt = os.pipe()   # chromium writes fd 4, we read
        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-dev-shm-usage",
                "--allow-file-access-from-files", f"--user-data-dir={self._profile}",
                # offline: every http(s) request goes to a proxy that is not there
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                f"--window-size={WIDTH},900", "about:blank"]

        def _fds():
            os.dup2(r_cmd, 3)
            os.dup2(w_evt, 4)

        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_cmd)
        os.close(w_evt)
        self._out = os.fdopen(w_cmd, "wb", buffering=0)
        self._in = os.fdopen(r_evt, "rb", buffering=0)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.resize(WIDTH)

    def _read(self, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self._buf:
            if time.time() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 60.0, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self._out.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, expr: str, timeout: float = 60.0):
        res = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True,
                        awaitPromise=True, timeout=int(timeout * 1000))
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str, timeout: float = 60.0) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.evaluate("document.readyState") == "complete":
                return
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not load")

    def resize(self, width: int, height: int = 900) -> None:
        self.width = width
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def screenshot(self, path: Path, full_height: int) -> None:
        width = self.width
        self.resize(width, max(900, min(int(full_height), 12000)))
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        self.resize(width)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(request):
    # only when asked for (`-m browser`): it needs a fresh docs build, which `make test` makes
    # after its tests; an unselected run skips instead of testing stale pages
    if not re.search(r"(?<!not )\bbrowser\b", request.config.getoption("markexpr") or ""):
        pytest.skip("browser test: run with -m browser (make test-browser)")
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (`make test-browser` installs it)")
    if not (HTML / "index.html").exists():
        pytest.skip("docs not built (`make docs`; `make test-browser` builds them)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    b = Browser(exe)
    yield b
    b.close()


# The start of every page script: wait for MathJax to typeset, then `main` is the article.
_TYPESET = r"""
(async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { await mj.startup.promise; }
  if (mj && mj.typesetPromise) { await mj.typesetPromise(); }
  const main = document.querySelector('article') || document.body;
"""


# After MathJax's startup promise: what a reader sees of the page.
_INSPECT = _TYPESET + r"""
  const text = main.innerText;
  const mathjaxSrc = [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s));
  const boxes = [...document.querySelectorAll('div.proof > p.admonition-title')].map(p => p.innerText.trim());
  // sideways overflow: a table wider than its (scrolling) wrapper, a badge, box or paragraph
  // sticking out of its cell, box or the article
  const wide = [];
  for (const t of main.querySelectorAll('table')) {
    const w = t.closest('.table-wrapper') || t.parentElement;
    if (t.getBoundingClientRect().width > w.clientWidth + 1)
      wide.push('table: ' + t.innerText.slice(0, 60));
  }
  for (const b of main.querySelectorAll('.pm-badge, .pm-check, .admonition, p, dl')) {
    const host = b.parentElement.closest('td, th, .pm-check, .admonition, article') || main;
    if (b.getBoundingClientRect().right > host.getBoundingClientRect().right + 1 && !b.closest('pre, mjx-container'))
      wide.push(b.tagName + '.' + b.className + ': ' + b.innerText.slice(0, 60));
  }
  return {
    mathjax: mathjaxSrc,
    mathjaxLoaded: !!(mj && mj.version),
    containers: document.querySelectorAll('mjx-container').length,
    mathMarkup: document.querySelectorAll('span.math, div.math').length,
    errors: document.querySelectorAll('mjx-merror').length,
    red: [...document.querySelectorAll('mjx-assistive-mml [mathcolor="red"], mjx-assistive-mml merror')]
         .map(e => e.textContent).slice(0, 10),
    rawMath: (text.match(/\\\(|\\\[|\$\$/g) || []).length,
    rawSample: (text.match(/.{0,40}(\\\(|\\\[|\$\$).{0,40}/g) || []).slice(0, 3),
    boxes: boxes,
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
    wide: wide.slice(0, 10),
    height: document.documentElement.scrollHeight,
  };
})()
"""


_SEEN: dict[str, dict] = {}


def _inspect(browser: Browser, page: str, width: int = WIDTH) -> dict:
    """Open ``page`` once per width, save its screenshot, return what the page script saw."""
    if (page, width) in _SEEN:
        return _SEEN[page, width]
    path = HTML / f"{page}.html"
    assert path.exists(), f"{path} was not built"
    browser.resize(width)
    browser.open(path.as_uri())
    info = browser.evaluate(_INSPECT, timeout=60)
    suffix = "" if width == WIDTH else f"@{width}"
    shot = SHOTS / (page.replace("/", "__") + suffix + ".png")
    browser.screenshot(shot, info["height"])
    info["screenshot"] = str(shot)
    urls = [e["params"]["request"]["url"] for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"]
    info["remote"] = [u for u in urls if not u.startswith(("file:", "data:", "blob:", "about:"))]
    failed = {e["params"]["requestId"] for e in browser.events
              if e.get("method") == "Network.loadingFailed"}
    info["failed_loads"] = [e["params"]["request"]["url"][:120] for e in browser.events
                            if e.get("method") == "Network.requestWillBeSent"
                            and e["params"]["requestId"] in failed]
    _SEEN[page, width] = info
    return info


@pytest.mark.parametrize("page", [f"theory/{p}" for p in THEORY_PAGES])
def test_theory_page_math_is_typeset_offline(browser, page):
    info = _inspect(browser, page)
    assert info["rawMath"] == 0, f"raw TeX left in the visible text: {info['rawSample']}"
    if not info["mathMarkup"]:  # a page without formulas loads no MathJax
        assert not info["containers"]
        return
    assert info["mathjax"] and all(s.startswith("file://") for s in info["mathjax"]), \
        f"MathJax must be served by the site itself, got {info['mathjax']}"
    assert info["mathjaxLoaded"], "MathJax did not load"
    assert info["containers"] >= info["mathMarkup"], \
        f"{info['mathMarkup']} formulas, {info['containers']} typeset (mjx-container)"
    assert info["rawMath"] == 0, f"raw TeX left in the visible text: {info['rawSample']}"
    assert info["errors"] == 0, f"{info['errors']} MathJax error(s)"
    assert not info["red"], f"undefined macros rendered in red: {info['red']}"
    assert not info["remote"], f"the page asks the network for: {info['remote'][:5]}"
    assert not info["failed_loads"], f"resources that failed to load: {info['failed_loads']}"


@pytest.mark.parametrize("page", [f"theory/{p}" for p in THEORY_PAGES])
def test_theorem_boxes_carry_the_papers_numbers(browser, page):
    info = _inspect(browser, page)
    for title in info["boxes"]:
        m = re.match(r"(Theorem|Lemma|Proposition|Corollary|Definition|Assumption|Example|Remark)"
                     r"\s+([A-Z]?\.?\d[\d.]*)", title)
        if m:  # a number on a box is the paper's: the box says which paper
            assert "paper" in title, f"a numbered box that names no paper: {title!r}"


@pytest.mark.parametrize("width", [WIDTH, 1800])
@pytest.mark.parametrize("page", ["theory/findings", "theory/estimators", "results/tabular",
                                  "checks", "_generated/api/theory"])
def test_nothing_overflows_sideways(browser, page, width):
    info = _inspect(browser, page, width)
    assert not info["wide"], f"cut off or sticking out at {width} px: {info['wide']}"
    assert info["scrollWidth"] <= info["clientWidth"] + 1, \
        f"the page scrolls sideways: {info['scrollWidth']} > {info['clientWidth']}"


# Every page: code blocks and check boxes show all they hold at 1280 px (no line hidden behind a
# scroll bar or cut at the edge), and a check box's formulas are typeset.
_BLOCKS = _TYPESET + r"""
  const right = main.getBoundingClientRect().right;
  const clipped = [];
  for (const el of main.querySelectorAll('pre, .pm-check')) {
    if (el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().right > right + 1)
      clipped.push(el.tagName + '.' + el.className + ': ' + el.innerText.slice(0, 80));
  }
  const boxes = [...main.querySelectorAll('.pm-check')];
  return {
    clipped: clipped.slice(0, 10),
    boxMath: boxes.reduce((n, b) => n + b.querySelectorAll('span.math').length, 0),
    boxTypeset: boxes.reduce((n, b) => n + b.querySelectorAll('mjx-container').length, 0),
    boxErrors: boxes.reduce((n, b) => n + b.querySelectorAll('mjx-merror').length, 0),
    boxRaw: boxes.map(b => [...b.querySelectorAll('p:not(.pm-check-head)')].map(p => p.innerText).join(' ')).filter(t => /\\\(|\\\[|[A-Za-z\u0370-\u03ff]_\{/.test(t)).map(t => t.slice(0, 80)),
  };
})()
"""


def _all_pages() -> list[str]:
    if not HTML.is_dir():
        return []
    skip = ("genindex", "search", "py-modindex")
    return sorted(str(p.relative_to(HTML).with_suffix("")) for p in HTML.rglob("*.html")
                  if not p.name.startswith("_") and "_static" not in p.parts and "_sources" not in p.parts
                  and p.stem not in skip)


@pytest.mark.parametrize("page", _all_pages() or ["index"])
def test_code_blocks_and_check_boxes_are_not_clipped(browser, page):
    path = HTML / f"{page}.html"
    assert path.exists(), f"{path} was not built"
    browser.resize(WIDTH)
    browser.open(path.as_uri())
    info = browser.evaluate(_BLOCKS, timeout=60)
    assert not info["clipped"], f"cut off at {WIDTH} px: {info['clipped']}"
    assert info["boxTypeset"] >= info["boxMath"], f"{info['boxMath']} formulas in check boxes, {info['boxTypeset']} typeset"
    assert info["boxErrors"] == 0 and not info["boxRaw"], f"check-box math not typeset: {info['boxRaw'][:3]}"
