"""Real-browser checks, in headless Chromium through Playwright.

1. The built site (``_build/html``, built here if missing): every chapter page loads, shows at least
   one figure, has no error output and no broken image.
2. A live JupyterLab on a free loopback port: the feature-visualisation chapter (the ``.md`` file,
   opened as a notebook by jupytext) is run top to bottom, a control of the comparison widget is
   changed, and the widget's image must change.

Screenshots go to ``_build/screenshots/``. The module is skipped only where ``/usr/bin/chromium``
is absent (``make test`` installs Debian's ``chromium`` when it runs as root).
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium at /usr/bin/chromium (install Debian's `chromium`; `make test` does so as root)",
)
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDGET_CHAPTER = "book/visualisation.md"
LAB_RUN_TIMEOUT_MS = 15 * 60 * 1000


def toc_chapters() -> list[str]:
    """Chapters of ``_toc.yml`` that are notebooks (have a kernelspec), as paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for entry in toc.get("chapters", []):
        files.append(entry["file"])
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return [f for f in files if "\nkernelspec:" in (ROOT / f"{f}.md").read_text()]


CHAPTERS = toc_chapters()


def _build_site() -> None:
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--all", "--builder", "html"]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=3600)


@pytest.fixture(scope="module")
def site() -> str:
    """Base URL of the built site, served over HTTP on a free loopback port."""
    if not all((HTML_DIR / f"{c}.html").is_file() for c in CHAPTERS):
        _build_site()
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_toc_lists_chapters():
    assert "book/intro" in CHAPTERS
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_site_chapter_page(site, browser, chapter):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        response = page.goto(f"{site}/{chapter}.html", wait_until="load")
        assert response is not None and response.ok, f"{chapter}.html did not load ({response and response.status})"
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        assert page.locator("article h1").count() >= 1, f"{chapter}: no title"

        figures = page.locator("article .cell_output img")
        assert figures.count() >= 1, f"{chapter}: no figure in any cell output"
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'))"
        )
        assert not broken, f"{chapter}: broken images {broken}"

        errors = page.locator("article .cell_output .output.traceback, article .cell_output .output.error")
        assert errors.count() == 0, f"{chapter}: error output: {errors.first.inner_text()[:500]}"
        outputs = " ".join(page.locator("article .cell_output").all_inner_texts())
        assert "Traceback (most recent call last)" not in outputs, f"{chapter}: a traceback in the outputs"
        page.screenshot(path=str(SHOTS / f"site-{Path(chapter).name}.png"), full_page=True)
    finally:
        page.close()


# --------------------------------------------------------------------------------------- JupyterLab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """Lab settings for a test: every cell in the DOM (no windowing), no autosave, no news or update checks."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        # Never write the chapter back to book/ during a test.
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jupyterlab")
    _write_settings(tmp / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        f"--LabApp.user_settings_dir={tmp / 'settings'}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.allow_root=True",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"JupyterLab did not start: {(tmp / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


_IMAGE_DIGEST = """async (img) => {
  const data = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let h = 2166136261;
  for (const b of data) { h ^= b; h = Math.imul(h, 16777619) >>> 0; }
  return {src: img.src, length: data.length, hash: h};
}"""


def test_widget_in_jupyterlab(jupyterlab, browser):
    url, token = jupyterlab
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    try:
        page.goto(f"{url}/lab?token={token}", wait_until="load")
        page.wait_for_function("window.jupyterapp !== undefined && window.jupyterapp.started", timeout=120_000)
        page.evaluate("() => window.jupyterapp.started")
        # What a reader does with right click > Open With > Jupytext Notebook: jupytext's contents
        # manager serves the MyST .md as a notebook and JupyterLab shows notebook cells.
        page.evaluate(
            "(path) => window.jupyterapp.commands.execute('docmanager:open', {path, factory: 'Jupytext Notebook'})",
            WIDGET_CHAPTER,
        )
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        page.wait_for_function(
            """() => { const w = window.jupyterapp.shell.currentWidget;
                       const k = w && w.sessionContext && w.sessionContext.session
                                 && w.sessionContext.session.kernel;
                       return k && k.status === 'idle'; }""",
            timeout=120_000,
        )
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        image = page.locator(".jp-OutputArea-output .widget-image").first
        image.wait_for(state="attached", timeout=LAB_RUN_TIMEOUT_MS)
        # Wait for the whole notebook to finish: no cell is still queued or running.
        page.wait_for_function(
            """() => { const prompts = Array.from(document.querySelectorAll('.jp-InputPrompt'));
                       return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*')); }""",
            timeout=LAB_RUN_TIMEOUT_MS,
            polling=1000,
        )
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"error output in JupyterLab: {errors.first.inner_text()[:800]}"
        image.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        before = image.evaluate(_IMAGE_DIGEST)
        assert before["length"] > 1000
        image.screenshot(path=str(SHOTS / "lab-widget-before.png"))
        page.screenshot(path=str(SHOTS / "lab-notebook.png"))

        level = page.locator(".jp-OutputArea-output .widget-dropdown", has=page.locator("label", has_text="FPN level"))
        select = level.locator("select").first
        options = select.locator("option").all_inner_texts()
        assert len(options) >= 2, f"FPN level dropdown offers {options}"
        current = select.input_value()
        new = next(o for o in options if o != current)
        select.select_option(label=new)
        page.wait_for_function(
            "(args) => args[0].src !== args[1]", arg=[image.element_handle(), before["src"]], timeout=120_000
        )
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        after = image.evaluate(_IMAGE_DIGEST)
        assert (after["length"], after["hash"]) != (before["length"], before["hash"]), "widget image did not change"
        image.screenshot(path=str(SHOTS / "lab-widget-after.png"))
        # The fidelity table follows the control too.
        table = page.locator(".jp-OutputArea-output .widget-html", has_text="Fidelity at level").first
        assert re.search(rf"level {re.escape(new)}\b", table.inner_text())
    finally:
        page.close()
