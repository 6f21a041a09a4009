"""The toy chapter's lambda slider, used in the built book the way a reader uses it: headless
Chromium, network cut off, no kernel. Moving the slider must change the picture shown and the
lambda it names.

Shares the browser, the offline page and the book build with tests/test_browser.py; like those
checks it skips when chromium or playwright is missing.
"""

import pytest
import test_browser

# Checked here, not only in the browser fixture: pytest builds the book (a session fixture) before
# it reaches a module's fixtures, and a machine that cannot run the check should not wait for that.
pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    test_browser.CHROMIUM is None,
    reason="no chromium on PATH: `apt-get install chromium` (as .ci/run does) to run the browser checks",
)

browser = test_browser.browser  # the fixture, made visible to this module
TOY_PAGE = "book/experiments/toy_manifold.html"

# The slider's state as the reader sees it: which frames are visible, the label shown, and the
# visible frame's picture (its natural size and the start of its data).
STATE_JS = """root => {
  const frames = [...root.querySelectorAll('img.pag-slider-frame')];
  const visible = frames.filter(img => img.checkVisibility() && img.getBoundingClientRect().width > 0);
  return {
    frames: frames.length,
    loaded: frames.filter(img => img.complete && img.naturalWidth > 0).length,
    visible: visible.map(img => frames.indexOf(img)),
    label: root.querySelector('output').textContent,
    src: visible.length ? visible[0].src.slice(-200) : null,
    width: visible.length ? visible[0].getBoundingClientRect().width : 0,
    column: root.closest('main').getBoundingClientRect().width,
  };
}"""


def test_moving_the_lambda_slider_changes_the_picture(browser, built_book):
    page = test_browser.open_offline(browser, built_book / TOY_PAGE)
    try:
        slider = page.locator("main .pag-slider")
        assert slider.count() == 1, "the toy chapter has no lambda slider"
        control = slider.locator("input[type=range]")
        first = slider.evaluate(STATE_JS)
        assert first["frames"] >= 2 and first["loaded"] == first["frames"], first
        assert int(control.get_attribute("max")) == first["frames"] - 1
        assert first["visible"] == [0] and first["label"].startswith("λ = 0"), first
        assert 0 < first["width"] <= first["column"], "the picture is wider than the text column"

        control.focus()
        page.keyboard.press("ArrowRight")
        second = slider.evaluate(STATE_JS)
        assert second["visible"] == [1], second
        assert second["label"] != first["label"] and second["src"] != first["src"]

        page.keyboard.press("End")
        last = slider.evaluate(STATE_JS)
        assert last["visible"] == [first["frames"] - 1] and last["label"] not in (first["label"], second["label"])
        assert not page.outside_requests, f"the page reached for the network: {page.outside_requests}"
    finally:
        page.close()
