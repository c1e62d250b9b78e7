"""Smoke test of ``bench/load.py`` (a classroom's load), run tiny: 2 browser contexts, 1 background
job, 3 sessions. It checks that the bench runs end to end and that its JSON has every figure with a
value; the timing targets are the bench's business (a busy machine may miss them), correctness is
checked here: no page with an exception, the job queued through the page done, none lost.
Skips like the browser test when Chromium (outside CI) or Playwright is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIGURES = [
    "cold_first_render_s", "alone_first_render_median_s", "first_render_p50_s", "first_render_p95_s",
    "first_render_max_s", "slowdown_vs_alone_p50", "slowdown_vs_alone_p95", "slowdown_vs_alone_max",
    "pages_opened", "pages_with_exception", "pages_not_rendered", "jobs_queued_from_ui", "jobs_done",
    "jobs_failed", "jobs_lost", "jobs_wall_s", "sessions_rendered", "session_first_render_p50_s",
    "session_first_render_p95_s", "rss_before_mb", "rss_half_mb", "rss_after_mb", "rss_growth_mb",
    "workers_rss_mb", "server_cpu_share", "browser_cpu_share", "server_cpu_per_page_s",
    "floor_first_render_p50_s", "floor_first_render_p95_s", "p95_over_floor",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_load_bench_runs_tiny_and_reports_every_figure(tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI; the README's test command installs it")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    pytest.importorskip("playwright.async_api")
    out = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if k not in ("ROBUSTSCOPE_CHECKPOINTS", "ROBUSTSCOPE_RUNS")}
    proc = subprocess.run([sys.executable, "bench/load.py", "--contexts", "2", "--jobs", "1", "--sessions", "3",
                           "--timeout", "90", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: a timing target missed
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert set(FIGURES) <= set(figures), set(FIGURES) - set(figures)
    assert all(isinstance(figures[name]["value"], (int, float)) for name in FIGURES), figures
    # cold, alone, 2 contexts × 4 pages, the job's page, sessions, then 2 contexts × 4 pages of the floor app
    assert figures["pages_opened"]["value"] == 1 + 4 + 2 * 4 + 1 + 3 + 2 * 4
    assert 0 < figures["server_cpu_share"]["value"] < 100 and 0 < figures["browser_cpu_share"]["value"] < 100
    assert figures["server_cpu_per_page_s"]["value"] > 0 and figures["floor_first_render_p95_s"]["value"] > 0
    for name, value in (("pages_with_exception", 0), ("jobs_queued_from_ui", 1), ("jobs_done", 1),
                        ("jobs_failed", 0), ("jobs_lost", 0)):
        assert figures[name]["value"] == value, (name, proc.stdout[-3000:])
    assert report["passed"] == all(row["pass"] is not False for row in figures.values())
