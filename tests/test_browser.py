"""Every built page, opened in headless Chromium with the network cut off: images load, every
equation is typeset by the book's own MathJax, no raw glue keys or tracebacks, no code cell open
before the first result, no table, figure or caption wider than the text column at 1280 px, and
results tables numbered as tables.

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
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# TeX that MathJax should have turned into math; any of it in visible text means it did not run.
RAW_TEX = re.compile(r"\$\$|\\(mathcal|frac|ell|epsilon|lambda|nabla|\(|\[)")
# The glued results tables; each must come out as a numbered table, not a figure.
RESULTS_TABLES = ("tab-cifar10", "tab-stl10", "tab-lambda", "tab-seeds")

# The first visible code cell that comes before the first result (figure, table or image
# output) of the page, or null. The parameters table is an input, not a result.
CODE_BEFORE_RESULT_JS = """() => {
  const main = document.querySelector('main');
  // checkVisibility, unlike client rects, is false inside a closed <details> (content-visibility).
  const shown = el => el.checkVisibility({visibilityProperty: true}) && el.getClientRects().length > 0;
  const code = [...main.querySelectorAll('.cell_input')].filter(shown);
  const results = [...main.querySelectorAll('figure, table, .cell_output img')]
    .filter(el => shown(el) && !el.closest('.parameters-in-use'));
  if (!code.length) return null;
  if (!results.length) return code[0].innerText.slice(0, 120);
  const codeFirst = code[0].compareDocumentPosition(results[0]) & Node.DOCUMENT_POSITION_FOLLOWING;
  return codeFirst ? code[0].innerText.slice(0, 120) : null;
}"""

# Waits until MathJax (if the page loads it) has typeset everything; then counts the math
# elements Sphinx wrote and those that got no MathJax output.
MATH_JS = """async () => {
  const uses = document.querySelector('script[src*="mathjax"]');
  if (uses) {
    for (let i = 0; i < 100 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
      await new Promise(r => setTimeout(r, 50));
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return {loaded: false};
    await MathJax.startup.promise;
  }
  const math = [...document.querySelectorAll('main .math')];
  return {loaded: true, src: uses ? uses.src : null, total: math.length,
          untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60))};
}"""


# Tables, figures, images and captions that reach past the text column (at 1280 px), where the
# theme would clip them or hide them behind a scrollbar; each as "tag: start of its text".
WIDER_THAN_COLUMN_JS = """() => {
  const column = document.querySelector('main article') || document.querySelector('main');
  const box = column.getBoundingClientRect();
  const wide = el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1 || el.scrollWidth > el.clientWidth + 1);
  };
  return [...column.querySelectorAll('table, figure, img, caption, figcaption')]
    .filter(wide)
    .map(el => el.tagName.toLowerCase() + ': ' + (el.innerText || el.getAttribute('src') || '').slice(0, 60));
}"""


def toc_pages() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return [re.search(r"root: (\S+)", toc).group(1)] + re.findall(r"file: (\S+)", toc)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: `apt-get install chromium` (as .ci/run does) to run the browser checks")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_offline(browser, path: Path):
    """A page showing ``path``, with every request that would leave the machine refused and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.outside_requests = []

    def refuse_network(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            page.outside_requests.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", refuse_network)
    page.goto(path.as_uri(), wait_until="load")
    return page


@pytest.mark.parametrize("name", toc_pages())
def test_page_renders_cleanly(built_book, browser, name):
    page = open_offline(browser, built_book / f"{name}.html")
    try:
        math = page.evaluate(MATH_JS)
        shots = ROOT / "_build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{name.replace('/', '__')}.png"), full_page=True)

        assert not page.outside_requests, f"the page reached for the network: {page.outside_requests}"
        assert math["loaded"], "the page references MathJax but it did not load from the book"
        assert not math["untypeset"], f"equations MathJax did not typeset: {math['untypeset']}"
        text = page.inner_text("main")
        raw = sorted({m.group(0) for m in RAW_TEX.finditer(text)})
        assert not raw, f"unrendered TeX in visible text: {raw}"

        broken = page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        assert not broken, f"images that did not load: {broken}"
        assert "{glue" not in text and "glue:" not in text, "a glue reference was not resolved"
        assert "Traceback (most recent call last)" not in text
        assert page.locator("main .output.traceback, main .output.error").count() == 0, "an error output is shown"
        assert page.locator("main h1").count() >= 1
        too_wide = page.evaluate(WIDER_THAN_COLUMN_JS)
        assert not too_wide, f"wider than the text column at 1280 px: {too_wide}"
        open_code = page.evaluate(CODE_BEFORE_RESULT_JS)
        assert open_code is None, f"a code cell is shown expanded before the first result: {open_code!r}"
    finally:
        page.close()


def test_equation_page_typesets_with_the_books_own_mathjax(built_book, browser):
    """The objective chapter is mostly equations: they must all be MathJax output, served from _static."""
    page = open_offline(browser, built_book / "book/objective.html")
    try:
        math = page.evaluate(MATH_JS)
        assert math["src"] and math["src"].startswith("file:") and "/_static/mathjax/" in math["src"], math["src"]
        assert math["total"] >= 10 and not math["untypeset"], math
        assert page.locator("main mjx-container[display='true']").count() >= 2, "display equations missing"
    finally:
        page.close()


def test_results_tables_are_numbered_tables(built_book, browser):
    """Each glued results table is a <table> with a "Table N" caption; N runs 1, 2, ... in reading order."""
    numbers, labels = [], []
    for name in toc_pages():
        path = built_book / f"{name}.html"
        if 'id="tab-' not in path.read_text(encoding="utf-8"):
            continue
        page = open_offline(browser, path)
        try:
            for anchor in page.locator('main [id^="tab-"]').all():
                label = anchor.get_attribute("id")
                tag = anchor.evaluate("el => el.tagName.toLowerCase()")
                assert tag == "table", f"{name}: {label} is a <{tag}>, not a table"
                caption = anchor.locator("caption").inner_text()
                number = re.match(r"Table (\d+)\s+\S", caption)
                assert number, f"{name}: {label} has no 'Table N' caption: {caption[:80]!r}"
                numbers.append(int(number.group(1)))
                labels.append(label)
            figure_captions = page.locator("main figure figcaption").all_inner_texts()
            assert not [c for c in figure_captions if not c.startswith("Fig.")], figure_captions
        finally:
            page.close()
    assert set(RESULTS_TABLES) <= set(labels), f"results tables missing: {set(RESULTS_TABLES) - set(labels)}"
    assert numbers == list(range(1, len(numbers) + 1)), f"tables are not numbered 1, 2, ... in order: {numbers}"
