"""The book builds with Sphinx warnings as errors, and its pages show what they should."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_toc_page_is_built(built_book):
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"file: (\S+)", toc) + [re.search(r"root: (\S+)", toc).group(1)]:
        assert (built_book / f"{name}.html").exists(), name


def test_toy_page_shows_boundaries_and_seed_table(built_book):
    html = page_text(built_book / "book/experiments/toy_manifold.html")
    assert re.search(r'<img[^>]+src="[^"]+\.png"', html), "decision-boundary figure missing"
    assert "fig-toy-boundaries" in html
    cell = r"<t{tag}[^>]*>(?:\s|<p>)*{text}(?:\s|</p>)*</t{tag}>"
    assert re.search(cell.format(tag="h", text=r"PGD \(ours\)"), html), "accuracy table missing"
    assert re.search(cell.format(tag="d", text="vanilla"), html) and re.search(cell.format(tag="d", text="pag"), html)
    assert "run record" in html


def test_no_raw_glue_keys_roles_or_tracebacks(built_book):
    for page in built_book.rglob("*.html"):
        html = page_text(page)
        assert "{glue" not in html, page
        # A role in glued text renders only where the glue directive parses MyST; elsewhere it shows raw.
        assert not re.search(r"\{(?:ref|numref|eq|doc|cite(?::[pt])?)\}", html), page
        assert "Traceback (most recent call last)" not in html, page


UNRUN_PHRASES = ("No real run", "not happened yet", "has not been run", "not been run yet")


# The pages that show real runs of each dataset: its chapter, and for CIFAR-10 the appendix studies.
RUN_PAGES = {
    "cifar10": (
        "experiments/cifar10",
        "appendix/lambda_ablation",
        "appendix/seed_error_bars",
        "appendix/k_study",
        "experiments/randomized_smoothing",
        "experiments/score_based",
        "experiments/latest_version",
    ),
    "stl10": ("experiments/stl10",),
}


def test_real_data_chapters_show_exactly_their_real_runs(built_book):
    """A chapter without a real run says so; every complete real run is shown by one of its dataset's
    pages, with its name in the records and its clean accuracy in a table (one decimal, as printed)."""
    from pagcore.book.text import percent
    from pagcore.store.runs import RunStore

    real = [r for r in RunStore().runs() if r.kind == "real" and r.complete]
    for dataset, pages in RUN_PAGES.items():
        htmls = [page_text(built_book / f"book/{page}.html") for page in pages]
        mine = [r for r in real if r.params["dataset"] == dataset]
        if not mine:
            assert any(p in htmls[0] for p in UNRUN_PHRASES), dataset
        for run in mine:
            shown = any(run.name in html and percent(run.metrics["clean"]) in html for html in htmls)
            again = " ".join(page.rpartition("/")[2] for page in pages)
            assert shown, f"{run.name} is complete but in no page: python tools/execute_notebooks.py {again}"


def test_gradient_masking_chapter_says_when_nothing_was_evaluated(built_book):
    from pagcore.evaluate.stored import stored_evaluations
    from pagcore.store.runs import RunStore

    evaluated = [r for r in RunStore().runs() if r.kind == "real" and r.complete and stored_evaluations(r)]
    html = page_text(built_book / "book/experiments/gradient_masking.html")
    assert "fig-masking-curves" in html and "tab-masking-checks" in html
    if not evaluated:
        assert "No real run has been evaluated yet" in html


def test_mathjax_is_served_from_the_book(built_book):
    """Offline readers get equations: MathJax is a file of the book, and no page asks a CDN for it."""
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()
    math_pages = 0
    for page in built_book.rglob("*.html"):
        scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', page_text(page), flags=re.I)
        assert all(not s.startswith(("http:", "https:", "//")) for s in scripts), (page, scripts)
        math_pages += bool(scripts)
    assert math_pages >= 5, "expected MathJax on the chapters with equations"
