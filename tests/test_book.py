"""The book: every chapter executes with the smoke profile on synthetic data and becomes a page, the
pipeline reruns only what changed and fails loudly, and the built site works offline in a browser.

The smoke build runs once per module (fixture ``site``) into book/_build/smoke/ (its executed
notebooks and stamps in book/_build/smoke/src/, so a later run executes only what changed); the
browser test opens that site in headless Chromium (``make browser`` installs it).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "book" / "build.py"
OUT = REPO / "book" / "_build" / "smoke"  # jupyter-book --path-output
STAGE = OUT / "src"  # executed notebooks, stamps, generated _toc.yml / _config.yml
HTML = OUT / "_build" / "html"
SCREENSHOTS = REPO / "book" / "_build" / "screenshots"
CHAPTERS = sorted(p.stem for p in (REPO / "notebooks").glob("*.py") if not p.name.startswith("_"))
SMOKE = ["--profile", "smoke", "--dataset", "synthetic", "--device", "auto"]


def run_build(*args: str, env: dict[str, str] | None = None, timeout: float = 3600):
    return subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + "\n" + proc.stderr).splitlines()[-n:])


@pytest.fixture(scope="module")
def site() -> Path:
    """The smoke build of the whole book (every notebook executed, then jupyter-book -W -n)."""
    proc = run_build(*SMOKE, "--stage", str(STAGE), "--out", str(OUT))
    assert proc.returncode == 0, f"the smoke build of the book failed:\n{tail(proc)}"
    return HTML


@pytest.fixture(scope="module")
def build_module():
    spec = importlib.util.spec_from_file_location("book_build", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The smoke build
# ---------------------------------------------------------------------------------------------


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/*.py: the book has no chapters"


def test_every_chapter_executes_and_has_a_page(site: Path):
    for page in ("index", "intro", "notation", "bibliography", *CHAPTERS):
        assert (site / f"{page}.html").is_file(), f"no page for {page}"
    for name in CHAPTERS:
        nb = json.loads((STAGE / f"{name}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: an error output in the executed notebook"
        injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1, f"{name}: papermill's injected-parameters cell is missing"
        assert "hide-cell" in injected[0]["metadata"]["tags"], f"{name}: the injected cell is not folded"
        assert 'profile = "smoke"' in "".join(injected[0]["source"])
        assert 'dataset = "synthetic"' in "".join(injected[0]["source"])
        stamp = json.loads((STAGE / f"{name}.stamp.json").read_text())
        assert stamp["inputs"]["parameters"]["profile"] == "smoke"
        # The download button offers the executed notebook.
        downloadable = site / "_sources" / f"{name}.ipynb"
        assert downloadable.is_file(), f"{name}: no .ipynb to download"
        assert json.loads(downloadable.read_text())["cells"] == nb["cells"]
        page = (site / f"{name}.html").read_text()
        assert f'href="_sources/{name}.ipynb"' in page, f"{name}: no download button for the notebook"
        assert "tag_hide-cell" in page


def test_table_of_contents_follows_the_notebooks(site: Path):
    toc = (STAGE / "_toc.yml").read_text()
    files = re.findall(r"file: (\S+)", toc)
    assert files == ["notation", *CHAPTERS, "bibliography"]


def test_pages_load_nothing_from_other_hosts(site: Path):
    """No script, stylesheet, font, image or frame from outside the site (links to papers are fine)."""
    loads = re.compile(r"<(script|link|img|iframe|source|embed)\b[^>]*?\b(?:src|href)=[\"'](https?:)?//",
                       re.I)
    for page in sorted(site.glob("*.html")):
        text = page.read_text()
        assert not loads.search(text), f"{page.name} loads something from another host"
        assert "unpkg.com" not in text and "cdn.jsdelivr" not in text and "googleapis" not in text, page.name
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served locally"


# ---------------------------------------------------------------------------------------------
# Parameters and failures (tiny notebooks of their own)
# ---------------------------------------------------------------------------------------------

GOOD = '''# %% [markdown]
# # A tiny chapter
#
# See {ref}`notation`.

# %% tags=["parameters"]
profile = "smoke"
dataset = "synthetic"
device = "auto"
lrs = [1.0]

# %%
print(sum(lrs))
'''

FAILING = '''# %% [markdown]
# # A failing chapter

# %% tags=["parameters"]
profile = "smoke"
dataset = "synthetic"
device = "auto"

# %%
x = 1

# %%
y = x / 0
'''


def test_papermill_style_parameters(build_module, tmp_path: Path):
    args = build_module.parse_args(["-p", "optimizer", "rmsprop", "-p", "epochs", "3", "-p", "fast", "True",
                                    "-r", "tag", "007", "-y", "lrs: [0.01, 0.1]"])
    assert build_module.extra_parameters(args) == {
        "optimizer": "rmsprop", "epochs": 3, "fast": True, "tag": "007", "lrs": [0.01, 0.1]}
    params = tmp_path / "params.yaml"
    params.write_text("l2s: [0.0001, 0.01]\nepochs: 1\n")
    args = build_module.parse_args(["-f", str(params), "-p", "epochs", "2"])
    assert build_module.extra_parameters(args) == {"l2s": [0.0001, 0.01], "epochs": 2}
    with pytest.raises(build_module.BuildError, match="PROFILE"):
        build_module.extra_parameters(build_module.parse_args(["-p", "profile", "paper"]))


def test_list_parameter_reaches_the_notebook_and_warnings_fail_the_build(tmp_path: Path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "01_tiny.py").write_text(GOOD.replace("{ref}`notation`", "{ref}`no-such-label`"))
    common = ["--notebooks", str(tmp_path / "nb"), "--stage", str(tmp_path / "stage"), "--out", str(tmp_path)]
    proc = run_build(*SMOKE, *common, "--only", "01_tiny", "-y", "lrs: [0.25, 0.5]")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a Sphinx warning (unknown reference) must fail the build"
    assert "no-such-label" in out and "01_tiny" in out, tail(proc)
    nb = json.loads((tmp_path / "stage" / "01_tiny.ipynb").read_text())
    assert any("0.75" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    proc = run_build(*SMOKE, *common, "--only", "01_tiny", "-p", "no_such_parameter", "1")
    assert proc.returncode != 0 and "has no parameter 'no_such_parameter'" in proc.stderr, tail(proc)


def test_only_what_changed_is_executed_again(tmp_path: Path):
    (tmp_path / "nb").mkdir()
    source = tmp_path / "nb" / "01_tiny.py"
    source.write_text(GOOD)
    common = [*SMOKE, "--notebooks", str(tmp_path / "nb"), "--stage", str(tmp_path / "stage"), "--no-html"]

    def executed(*extra: str) -> bool:
        proc = run_build(*common, *extra)
        assert proc.returncode == 0, tail(proc)
        assert ("book: 01_tiny: up to date" in proc.stdout) != ("01_tiny: executing" in proc.stdout)
        return "01_tiny: executing" in proc.stdout

    assert executed()
    assert not executed(), "an unchanged chapter was executed again"
    assert executed("-y", "lrs: [2.0]"), "new parameters must execute the chapter again"
    assert not executed("-y", "lrs: [2.0]")
    source.write_text(GOOD + "\n# %%\nprint('changed')\n")
    assert executed("-y", "lrs: [2.0]"), "a changed source must execute the chapter again"
    stamp = json.loads((tmp_path / "stage" / "01_tiny.stamp.json").read_text())
    assert {"source_sha256", "parameters", "l2bn_version", "code_version"} <= set(stamp["inputs"])


def test_a_failing_cell_fails_the_build_naming_notebook_and_cell(tmp_path: Path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "02_failing.py").write_text(FAILING)
    proc = run_build(*SMOKE, "--notebooks", str(tmp_path / "nb"), "--stage", str(tmp_path / "stage"),
                     "--out", str(tmp_path))
    assert proc.returncode == 1, tail(proc)
    assert "02_failing.py failed in cell 4 (line 13 of" in proc.stderr, tail(proc)
    assert "ZeroDivisionError" in proc.stderr and "y = x / 0" in proc.stderr
    assert (tmp_path / "stage" / "02_failing.failed.ipynb").is_file()
    assert not (tmp_path / "stage" / "02_failing.ipynb").exists()
    assert not (tmp_path / "_build" / "html").exists(), "no HTML after a failed notebook"


def test_missing_cifar10_offline_stops_before_any_notebook_runs(tmp_path: Path):
    """No CIFAR-10 on disk and no network (a proxy that refuses): stop at once, say DATASET=synthetic."""
    offline = {"L2BN_DATA": str(tmp_path / "data"), "https_proxy": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    t0 = time.monotonic()
    proc = run_build("--profile", "smoke", "--dataset", "cifar10", "--stage", str(tmp_path / "stage"),
                     "--out", str(tmp_path), env=offline, timeout=300)
    assert proc.returncode == 2, tail(proc)
    assert "DATASET=synthetic" in proc.stderr, tail(proc)
    assert "executing" not in proc.stdout
    assert not list((tmp_path / "stage").glob("*.ipynb")), "a notebook ran although the data is missing"
    assert time.monotonic() - t0 < 120


# ---------------------------------------------------------------------------------------------
# The browser test: headless Chromium over the DevTools protocol (--remote-debugging-pipe)
# ---------------------------------------------------------------------------------------------


def chromium_binary() -> str | None:
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(candidate) if not candidate.startswith("/") else candidate
        if path and os.access(path, os.X_OK):
            return path
    return None


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe (fds 3 and 4): JSON
    messages separated by NUL bytes, so no websocket client is needed."""

    def __init__(self, binary: str, profile_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium reads commands from fd 3 and writes to fd 4: park the child's ends on high
        # descriptors and let bash move them there (no preexec_fn, which is unsafe with threads).
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        os.set_inheritable(hi_r, True)
        os.set_inheritable(hi_w, True)
        move = f'exec "$0" "$@" 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-'

        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--disable-pings", "--no-default-browser-check", "--mute-audio",
            "--hide-scrollbars", "--window-size=1280,1000", f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe", "about:blank",
        ]
        self.proc = subprocess.Popen(["bash", "-c", move, binary, *flags], pass_fds=(hi_r, hi_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (did it crash?)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, timeout: float = 60,
             session: bool = True) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                msg = self._read_message(deadline)
                if "method" in msg:
                    self.events.append(msg)
        except TimeoutError:
            pass

    def open_page(self) -> None:
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is navigating (its context was destroyed): try again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {expression}")
            self.pump(0.25)

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=10)
        except Exception:  # already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site: Path):
    """The built site on http://127.0.0.1:<port>/, from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def chapter_with_math_and_figure(site: Path) -> str:
    """The first chapter whose page has both math and an image (else the first with an image)."""
    with_img = [c for c in CHAPTERS if "<img" in (site / f"{c}.html").read_text()]
    assert with_img, "no chapter has a figure"
    both = [c for c in with_img if 'class="math' in (site / f"{c}.html").read_text()]
    return (both or with_img)[0]


PAGE_STATE = """(() => ({
  url: location.href,
  mjx: document.querySelectorAll('mjx-container').length,
  math: document.querySelectorAll('.math').length,
  mathjax: typeof MathJax === 'object' && MathJax.version ? MathJax.version : null,
  mathjaxSrc: Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax')),
  images: Array.from(document.images).map(i => ({src: i.src, complete: i.complete, w: i.naturalWidth})),
  download: Array.from(document.querySelectorAll('a.btn-download-source-button')).map(a => a.href),
}))()"""


def test_site_in_headless_chromium(served: str, site: Path, tmp_path: Path):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("Chromium is not installed: run `make browser` (apt-get install chromium)")
    chapter = chapter_with_math_and_figure(site)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = Chromium(binary, tmp_path / "chromium-profile")
    try:
        browser.open_page()
        for path, expect_page in (("/", "intro.html"), (f"/{chapter}.html", f"{chapter}.html")):
            browser.events.clear()
            browser.send("Page.navigate", {"url": served + path})
            browser.wait_for(f"location.pathname.endsWith('{expect_page}') "
                             "&& document.readyState === 'complete'")
            # MathJax typesets after the load event: wait until every math element is typeset.
            browser.wait_for("typeof MathJax === 'object' && MathJax.startup && MathJax.startup.promise "
                             "? MathJax.startup.promise.then(() => true) : false", timeout=90)
            browser.wait_for("document.querySelectorAll('.math').length === 0 || "
                             "document.querySelectorAll('mjx-container').length > 0", timeout=90)
            browser.pump(1.0)  # let late requests (fonts) show up
            state = browser.evaluate(PAGE_STATE)
            name = expect_page.removesuffix(".html")
            shot = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
            (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot))

            assert state["math"] > 0, f"{name}: no math on the page"
            assert state["mjx"] > 0, f"{name}: MathJax did not typeset the math"
            assert state["mathjax"] and state["mathjax"].startswith("3"), state
            assert state["mathjaxSrc"] and all(s.startswith(served + "/_static/mathjax/") for s in
                                               state["mathjaxSrc"]), state["mathjaxSrc"]
            for img in state["images"]:
                assert img["complete"] and img["w"] > 0, f"{name}: image did not load: {img['src']}"
            requests = [e["params"]["request"]["url"] for e in browser.events
                        if e["method"] == "Network.requestWillBeSent"]
            assert any("/_static/mathjax/" in u for u in requests), "MathJax was not loaded from the site"
            foreign = [u for u in requests if not u.startswith((served + "/", "data:", "blob:", "about:"))]
            assert not foreign, f"{name}: requests to other hosts: {foreign}"
            failed = [e["params"] for e in browser.events if e["method"] == "Network.loadingFailed"]
            assert not failed, f"{name}: failed requests: {failed}"
            responses = [e["params"]["response"] for e in browser.events
                         if e["method"] == "Network.responseReceived"]
            # The browser asks for /favicon.ico by itself; the book has none.
            bad = [(r["url"], r["status"]) for r in responses
                   if r["status"] >= 400 and not r["url"].endswith("/favicon.ico")]
            assert not bad, f"{name}: HTTP errors: {bad}"
            if name == chapter:
                assert state["images"], f"{name}: no figure on the page"
                assert state["download"] == [f"{served}/_sources/{chapter}.ipynb"], state["download"]
                status = browser.evaluate(f"fetch('/_sources/{chapter}.ipynb').then(r => r.json())"
                                          ".then(nb => nb.cells.length)")
                assert status > 0, "the notebook behind the download button is not a notebook"
    finally:
        browser.close()
