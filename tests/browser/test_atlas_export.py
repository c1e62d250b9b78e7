"""The static HTML atlas in a real browser (issue 24): ``python -m engine atlas ... --out DIR``
opened from file:// in headless Chromium, no server: the index, every sort order and every unit
page load, every image decodes, and every link leads to a page that loads."""
from __future__ import annotations

import pytest

from analysis_helpers import cli
from test_app_browser import browser_page

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_autostart")]


def test_the_exported_atlas_opens_offline_and_every_link_resolves(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "atlas"
    rc, _, _ = cli(["atlas", "--checkpoint", tiny_checkpoints["standard"], "--compare", tiny_checkpoints["robust"],
                    "--layer", "net.block1", "--dataset", "shapes", "--n", 40, "--k", 3, "--directions", 2,
                    "--steps", 4, "--out", out], capsys)
    assert rc == 0
    with browser_page() as page:
        failed = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        seen, queue = set(), [(out / "index.html").as_uri()]
        while queue:
            url = queue.pop()
            if url in seen:
                continue
            seen.add(url)
            page.goto(url)
            broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                   ".map(i => i.src)")
            assert broken == [], (url, broken)
            queue += page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        assert failed == []
        pages = {url.rsplit("/", 1)[-1] for url in seen}
        units = len(list((out / "units").glob("*.html")))
        assert {"index.html", "index-selectivity.html", "index-sparsity.html", "index-match.html"} <= pages
        assert len(seen) == 4 + units and units > 0   # every unit page was reached by a link
