"""One real-browser check: headless Chromium against `streamlit run app.py` on 127.0.0.1.

It starts the server on a free local port, opens the Models page, waits for Streamlit to finish
the run, and asserts that the page shows its title and no exception text. The server and browser
stop by themselves. Outside CI the test skips when Chromium is not installed; in CI (CI=true) a
missing Chromium is a failure, since the README's test command installs it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture
def server(tiny_checkpoints):
    """`streamlit run app.py` on 127.0.0.1 with the two tiny checkpoints (the env is per-test)."""
    port = _free_port()
    env = dict(os.environ, ROBUSTSCOPE_AUTOSTART_WORKER="0")
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
           "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def browser_page():
    """A new page of headless Chromium (closed after the block); skips when Chromium is missing
    outside CI, fails in CI (the README's test command installs it)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI; the README's test command installs it")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def wait_for_run(page, timeout_ms: int = 90_000) -> None:
    """Until Streamlit's status widget (the running indicator) is gone."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def open_page(url: str, heading: str, shot: Path) -> dict[str, str]:
    """Open ``url`` in headless Chromium, wait for ``heading`` and for the run to finish, save a
    screenshot; return the page's body text and sidebar navigation text."""
    with browser_page() as page:
        page.goto(url, timeout=60_000)
        page.wait_for_selector(f"h1:has-text('{heading}')", timeout=90_000)
        wait_for_run(page)
        page.screenshot(path=str(shot))
        return {"body": page.inner_text("body"), "nav": page.inner_text("[data-testid='stSidebarNav']")}


def page_has_exception(text: str) -> bool:
    """Streamlit shows uncaught exceptions with the exception's class name and a traceback."""
    return any(marker in text for marker in ("Traceback (most recent call last)", "Exception:", "Error:"))


def test_models_page_renders_without_exception(server, tmp_path):
    text = open_page(server, "Models", tmp_path / "models.png")["body"]
    assert not page_has_exception(text), text[:2000]
    assert "tiny_standard" in text and "tiny_robust" in text


def test_deep_link_on_a_fresh_server_uses_the_app_navigation(server, tmp_path):
    """A bookmarked page URL opened first must show the app's pages, not every file in pages/."""
    nav = open_page(f"{server}/attack_lab", "Attack Lab", tmp_path / "attack_lab.png")["nav"]
    assert "Models" in nav and "Representations (CKA)" in nav
    assert "common" not in nav and "app" not in nav.split()


def test_a_background_cka_appears_by_itself(server, tmp_path):
    """Queue CKA in the background from the page, let a worker run it, and see the heatmap appear
    in the same browser tab with no click and no reload (the page follows its job)."""
    from engine.jobs import JobStore, run_worker

    with browser_page() as page:
        page.goto(f"{server}/representations", timeout=60_000)
        page.wait_for_selector("h2:has-text('Representations')", timeout=90_000)
        page.get_by_text("in the background", exact=True).first.click()
        page.get_by_role("button", name="Compute CKA").click()
        page.wait_for_selector("text=Queued as background job", timeout=60_000)
        assert page.locator("[data-testid='stPlotlyChart']").count() == 0
        store = JobStore()
        [job] = store.list()
        assert run_worker(store, once=True, lane="analysis") == 1 and store.get(job.id).status == "done"
        page.wait_for_selector("[data-testid='stPlotlyChart']", timeout=60_000)   # no user action
        wait_for_run(page, 60_000)
        page.screenshot(path=str(tmp_path / "cka_appeared.png"))
        text = page.inner_text("body")
        assert "result=" in page.url and not page_has_exception(text), text[:2000]
        # the PNG and HTML downloads are made when clicked (not on every render): they still arrive whole
        for label, start in (("PNG (matplotlib)", b"\x89PNG\r\n\x1a\n"), ("Interactive HTML", b"<!doctype html>")):
            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name=label).click()
            data = Path(download.value.path()).read_bytes()
            assert data.startswith(start) and len(data) > 1000, (label, data[:100])
