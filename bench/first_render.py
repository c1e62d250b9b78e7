"""Benchmark: the dashboard's first render in a real browser, against a bare Streamlit page.

Starts ``streamlit run app.py`` on 127.0.0.1 (the shipped ``checkpoints/``, no worker) and, as the
baseline, a one-line Streamlit script (``st.title``) on another port. For each server, headless
Chromium opens a fresh page ``--repeats`` times and times navigation → the page title visible and
Streamlit's "running" widget gone (the script's run finished). The first open after a server
starts is *cold* (the server imports the engine, torch and the checkpoints' cards); the others are
*warm* (a new browser session on a running server: what a second user sees).

Prints cold and warm seconds (median [min-max] over the repeats) per server and the app/baseline
ratio. Target: the app's warm first render under 3 s.

Usage::

    python bench/first_render.py                  # 5 repeats
    python bench/first_render.py --repeats 10 --page attack_lab --heading "Attack Lab"
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BASELINE_SCRIPT = 'import streamlit as st\nst.title("Baseline")\n'


def local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(script: Path, cwd: Path):
    """The URL of ``streamlit run script`` on a free local port; stopped on exit."""
    port = local_port()
    env = dict(os.environ, ROBUSTSCOPE_AUTOSTART_WORKER="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start for {script}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def render_seconds(browser, url: str, heading: str) -> float:
    """Seconds from navigation to ``heading`` shown and the script run finished, in a new page."""
    page = browser.new_page()
    try:
        start = time.perf_counter()
        page.goto(url, timeout=120_000)
        page.wait_for_selector(f"h1:has-text('{heading}')", timeout=120_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=120_000)
        return time.perf_counter() - start
    finally:
        page.close()


def measure(browser, script: Path, cwd: Path, path: str, heading: str, repeats: int) -> tuple[float, list[float]]:
    """(cold seconds, warm seconds per repeat) for one freshly started server."""
    with streamlit_server(script, cwd) as url:
        target = f"{url}/{path}" if path else url
        cold = render_seconds(browser, target, heading)
        return cold, [render_seconds(browser, target, heading) for _ in range(repeats)]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--page", default="", help="URL path of the page (default: the Models page)")
    parser.add_argument("--heading", default="Models", help="the page's title to wait for")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        baseline = Path(tmp) / "baseline.py"
        baseline.write_text(BASELINE_SCRIPT)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            base_cold, base_warm = measure(browser, baseline, Path(tmp), "", "Baseline", args.repeats)
            app_cold, app_warm = measure(browser, ROOT / "app.py", ROOT, args.page, args.heading, args.repeats)
        finally:
            browser.close()
    print(f"first render, {args.repeats} repeats, {os.cpu_count()} CPUs")
    print(f"  baseline (st.title only): cold {base_cold:.2f} s, warm {spread(base_warm)}")
    print(f"  RobustScope {args.page or 'models'}: cold {app_cold:.2f} s, warm {spread(app_warm)}")
    ratio = [a / statistics.median(base_warm) for a in app_warm]
    print(f"  ratio app/baseline (warm): {spread(ratio).replace(' s', '')}; cold {app_cold / base_cold:.2f}")
    print(f"  target warm < 3 s: {'met' if statistics.median(app_warm) < 3 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
