"""Every built page, opened in headless Chromium: images load, no raw glue keys, no tracebacks.

Screenshots of every page are saved under _build/screenshots/ for a human look. The test
needs Debian's chromium (CI installs it, see .ci/run) and the playwright package (dev extra);
Playwright drives the system browser, it downloads none.
"""

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a closed network: no background requests, no component updates, no sandbox (root).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")


def toc_pages() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return [re.search(r"root: (\S+)", toc).group(1)] + re.findall(r"file: (\S+)", toc)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.mark.parametrize("name", toc_pages())
def test_page_renders_cleanly(built_book, browser, name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto((built_book / f"{name}.html").as_uri(), wait_until="load")
        shots = ROOT / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{name.replace('/', '__')}.png"), full_page=True)

        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert not broken, f"images that did not load: {broken}"
        text = page.inner_text("main")
        assert "{glue" not in text and "glue:" not in text, "a glue reference was not resolved"
        assert "Traceback (most recent call last)" not in text
        assert page.locator("main .output.traceback, main .output.error").count() == 0, "an error output is shown"
        assert page.locator("main h1").count() >= 1
    finally:
        page.close()
