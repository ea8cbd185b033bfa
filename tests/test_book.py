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
        assert (stamp["chapter"], stamp["profile"], stamp["dataset"]) == (name, "smoke", "synthetic")
        assert stamp["seconds"] >= 0 and stamp["started"] <= stamp["executed"] and stamp["code_version"]
        result_file = re.compile(r"(.*/)?results/[a-z0-9_]+(-(weight|layer|none))?-[0-9a-f]+\.csv")
        assert all(result_file.fullmatch(g["file"]) for g in stamp["grids"]), stamp["grids"]
        # The download button offers the executed notebook.
        downloadable = site / "_sources" / f"{name}.ipynb"
        assert downloadable.is_file(), f"{name}: no .ipynb to download"
        assert json.loads(downloadable.read_text())["cells"] == nb["cells"]
        page = (site / f"{name}.html").read_text()
        assert f'href="_sources/{name}.ipynb"' in page, f"{name}: no download button for the notebook"
        assert "tag_hide-cell" in page


def test_stamps_name_the_cached_grids_each_chapter_used(site: Path):
    """Chapters that train grids list their result files; the verdict uses all five of its rules."""
    used = {name: json.loads((STAGE / f"{name}.stamp.json").read_text())["grids"] for name in CHAPTERS}
    rules_used = {name: {Path(g["file"]).name.split("-")[0] for g in grids} for name, grids in used.items()}
    assert {"nesterov", "adam"} <= rules_used["05_weight_norm"]
    assert {"normalized_sgd", "sgd"} <= rules_used["07_normalized_weights"]
    assert {"sgd", "nesterov", "rmsprop", "adam", "normalized_sgd"} <= rules_used["10_verdict"]
    assert "sgd" in rules_used["03_steady_state"]


def test_table_of_contents_follows_the_notebooks(site: Path):
    toc = (STAGE / "_toc.yml").read_text()
    files = re.findall(r"file: (\S+)", toc)
    assert files == ["notation", *CHAPTERS, "status", "bibliography"]


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
        # Its own data folder: a sweep elsewhere on the machine must not count as a grid it used.
        proc = run_build(*common, *extra, env={"L2BN_DATA": str(tmp_path / "data")})
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
    assert {"started", "executed", "seconds", "profile", "dataset", "device", "code_version",
            "grids"} <= set(stamp)
    assert stamp["grids"] == [], "the tiny chapter reads no cached grid"


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


# ---------------------------------------------------------------------------------------------
# Readers and classrooms (issue 14): exercises, the student edition, the status page, provenance,
# pages that fit the screen, buttons only with a repository, an accessibility check
# ---------------------------------------------------------------------------------------------

STUDENT_OUT = REPO / "book" / "_build" / "smoke-student"
STUDENT_HTML = STUDENT_OUT / "_build" / "html"
EXPERIMENTS = [c for c in CHAPTERS if c[:2] in {"05", "06", "07", "08", "09"}]
REPOSITORY = "https://github.com/example/l2bn"
AXE = REPO / "book" / "_build" / "tools" / "node_modules" / "axe-core" / "axe.min.js"


def _solutions():
    sys.path.insert(0, str(REPO / "book"))
    from pipeline import solutions

    return solutions


def page_text(html: str) -> str:
    """The text of an HTML page, tags and scripts removed, whitespace collapsed."""
    import html as html_lib

    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


def probes(solution: str) -> list[str]:
    """Runs of plain words (no math, code, roles or quotes, which the HTML renders differently)
    from a solution: text that appears verbatim in a page that shows the solution."""
    plain = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`|\{[^}]*\}|\([^)]*\)", "|", solution, flags=re.S)
    plain = " ".join(plain.replace("*", "").split())
    runs = [r.strip(" ,;.") for r in re.findall(r"[A-Za-z][A-Za-z ,;]{40,}", plain)]
    return sorted(runs, key=len, reverse=True)[:2]


def solution_probes() -> dict[str, list[str]]:
    solutions = _solutions()
    found = {c: [p for s in solutions.chapter_solutions(REPO / "notebooks" / f"{c}.py") for p in probes(s)]
             for c in CHAPTERS}
    assert all(found.values()), f"chapters without a probe of their solutions: {found}"
    return found


def site_texts(html_dir: Path) -> dict[str, str]:
    """Every text a reader of the site can reach: pages (as text), page sources, notebooks offered
    for download and those inside the zip of notebooks."""
    import zipfile

    texts = {}
    for f in html_dir.rglob("*"):
        if f.suffix == ".html":
            texts[str(f)] = page_text(f.read_text())
        elif f.suffix in (".ipynb", ".md", ".txt", ".js") and "_static" not in f.parts:
            texts[str(f)] = f.read_text(errors="replace")
        elif f.suffix == ".zip":
            with zipfile.ZipFile(f) as zf:
                texts.update({f"{f}:{n}": zf.read(n).decode(errors="replace") for n in zf.namelist()})
    return texts


@pytest.fixture(scope="module")
def student_site(site: Path) -> Path:
    """The student edition, built from the smoke build's executed notebooks (nothing is executed
    again), with a repository URL set: the one build that shows the buttons."""
    t0 = time.monotonic()
    proc = run_build(*SMOKE, "--stage", str(STAGE), "--out", str(STUDENT_OUT), "--solutions", "hide",
                     env={"L2BN_REPOSITORY_URL": REPOSITORY})
    assert proc.returncode == 0, f"the student edition failed to build:\n{tail(proc)}"
    assert "executing" not in proc.stdout, "the student edition executed notebooks again"
    print(f"student edition built in {time.monotonic() - t0:.0f} s")
    return STUDENT_HTML


def test_every_chapter_shows_numbered_exercises_with_folded_solutions(site: Path):
    for name in CHAPTERS:
        page = (site / f"{name}.html").read_text()
        assert len(re.findall(r'class="[^"]*\bexercise\b', page)) >= 2, f"{name}: fewer than two exercises"
        assert re.search(r"Exercise\s+\d+", page_text(page)), f"{name}: exercises are not numbered"
        assert re.search(r'<details[^>]*class="[^"]*\bsolution\b', page) or \
            re.search(r'class="[^"]*\bsolution\b[^"]*\bdropdown\b', page), f"{name}: solutions are not folded"


def test_student_edition_and_its_downloads_have_no_solution_text(site: Path, student_site: Path):
    found = solution_probes()
    normal = {c: page_text((site / f"{c}.html").read_text()) for c in CHAPTERS}
    for chapter, runs in found.items():
        missing = [r for r in runs if r not in normal[chapter]]
        assert not missing, f"{chapter}: the probe does not find the solution in the normal site: {missing}"
    texts = site_texts(student_site)
    assert any(k.endswith(".zip:05_weight_norm.ipynb") for k in texts), "no zip of notebooks in the site"
    for where, text in texts.items():
        leaked = [r for runs in found.values() for r in runs if r in " ".join(text.split())]
        assert not leaked, f"{where}: solution text in the student edition: {leaked[:1]}"
    for chapter in CHAPTERS:
        page = (student_site / f"{chapter}.html").read_text()
        assert "student edition" in page and re.search(r'class="[^"]*\bexercise\b', page), chapter


def test_buttons_to_the_repository_appear_only_when_it_is_configured(site: Path, student_site: Path):
    for html_dir, expected in ((site, False), (student_site, True)):
        page = (html_dir / f"{EXPERIMENTS[0]}.html").read_text()
        assert (REPOSITORY in page) is expected, f"{html_dir}: repository link present={not expected}"
        assert ("colab.research.google.com" in page) is expected
        assert ("mybinder.org" in page) is expected
    offline = "".join(p.read_text() for p in site.glob("*.html"))
    assert not any(host in offline for host in ("mybinder", "colab.research", "github.com/example"))


def test_status_page_lists_every_chapter(site: Path):
    page = page_text((site / "status.html").read_text())
    assert f"{len(CHAPTERS)} of {len(CHAPTERS)} chapters executed" in page
    for name in CHAPTERS:
        title = json.loads((STAGE / f"{name}.ipynb").read_text())["cells"][0]["source"]
        heading = next(ln for ln in "".join(title).splitlines() if ln.startswith("# "))[2:].strip()
        assert page_text(heading) in page, f"status page: no row for {name}"
    assert "smoke" in page and "synthetic" in page and "cache" in page
    assert "status.html" in (site / "intro.html").read_text(), "the introduction does not link it"


def test_experiment_pages_fold_their_provenance(site: Path):
    for name in EXPERIMENTS:
        page = (site / f"{name}.html").read_text()
        blocks = re.findall(r'<details[^>]*class="[^"]*\bprovenance\b[^"]*"[^>]*>(.*?)</details>', page, re.S)
        assert blocks, f"{name}: no folded provenance block"
        opening = re.search(r"<details[^>]*provenance[^>]*>", page)[0]
        assert "open" not in opening, f"{name}: the provenance block is not folded"
        text = page_text(blocks[0])
        for word in ("seeds", "device", "code version", "finished", "l2bn sweep --optimizer"):
            assert word in text, f"{name}: the provenance block lacks {word!r}"
        assert "reproduce with" not in page_text(page), f"{name}: the old inline provenance is back"


OVERFLOW = """(() => {
  const W = document.documentElement.clientWidth;
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const inView = r => r.left >= -1 && r.right <= W + 1;
  const cls = el => typeof el.className === 'string' && el.className.trim() ?
    '.' + el.className.trim().split(/\\s+/).join('.') : '';
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls(el);
  const root = document.querySelector('article') || document.body;
  const bad = [];
  for (const el of root.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height || inView(r)) continue;
    let box = el.parentElement;
    while (box && box !== root.parentElement && !scrolls(box)) box = box.parentElement;
    if (box && scrolls(box) && inView(box.getBoundingClientRect())) continue;
    bad.push(name(el) + ' [' + Math.round(r.left) + ', ' + Math.round(r.right) + ']');
  }
  return {width: W, page: document.documentElement.scrollWidth, bad: bad.slice(0, 8), n: bad.length};
})()"""


def _open(browser: Chromium, url: str, width: int) -> None:
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    browser.send("Page.navigate", {"url": url})
    page = url.rsplit("/", 1)[-1] or "index.html"
    browser.wait_for(f"location.pathname.endsWith('{page}') && document.readyState === 'complete'")
    browser.wait_for("typeof MathJax !== 'object' || !MathJax.startup || !MathJax.startup.promise || "
                     "MathJax.startup.promise.then(() => true)", timeout=90)


def test_no_page_overflows_horizontally_at_1280_and_400_px(served: str, site: Path, tmp_path: Path):
    binary = chromium_binary()
    if binary is None:
        pytest.fail("Chromium is not installed: run `make browser` (apt-get install chromium)")
    pages = ["intro", "notation", *CHAPTERS, "status", "bibliography"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = Chromium(binary, tmp_path / "chromium-profile")
    problems = []
    try:
        browser.open_page()
        for width in (1280, 400):
            for name in pages:
                _open(browser, f"{served}/{name}.html", width)
                state = browser.evaluate(OVERFLOW)
                if state["n"] or state["page"] > state["width"]:
                    problems.append(f"{name} at {width} px: page {state['page']} px wide, {state['n']} "
                                    f"element(s) out of the column: {state['bad']}")
                if width == 400 and name in EXPERIMENTS:
                    shot = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
                    (SCREENSHOTS / f"{name}-400px.png").write_bytes(base64.b64decode(shot))
    finally:
        browser.close()
    assert not problems, "\n".join(problems)


AXE_RUN = """axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({
  id: v.id, impact: v.impact, n: v.nodes.length,
  where: v.nodes.slice(0, 2).map(n => n.target.join(' '))})))"""


def test_no_serious_accessibility_violations(served: str, site: Path, tmp_path: Path):
    """axe-core (npm; `make browser` installs it) in headless Chromium on every page: no violation
    of impact serious or critical. The counts of all violations are printed."""
    binary = chromium_binary()
    if binary is None or not AXE.is_file():
        pytest.fail("Chromium or axe-core is missing: run `make browser`")
    axe = AXE.read_text()
    browser = Chromium(binary, tmp_path / "chromium-profile")
    serious, counts = [], {}
    try:
        browser.open_page()
        for name in ["intro", "notation", *CHAPTERS, "status", "bibliography"]:
            _open(browser, f"{served}/{name}.html", 1280)
            browser.evaluate(axe + "; true")
            found = browser.evaluate(AXE_RUN, timeout=120)
            for v in found:
                counts[v["impact"]] = counts.get(v["impact"], 0) + v["n"]
                if v["impact"] in ("serious", "critical"):
                    serious.append(f"{name}: {v['id']} ({v['impact']}, {v['n']}×) at {v['where']}")
    finally:
        browser.close()
    print(f"axe-core violations by impact: {counts or 'none'}")
    assert not serious, "\n".join(serious)


def test_every_figure_has_alt_text(site: Path):
    for name in CHAPTERS:
        page = (site / f"{name}.html").read_text()
        for img in re.findall(r"<img\b[^>]*>", page):
            alt = re.search(r'\balt="([^"]*)"', img)
            assert alt and len(alt[1]) > 10 and not alt[1].endswith(".png"), f"{name}: {img[:200]}"
