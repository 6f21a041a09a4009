"""The reproduction-status page: paper values beside real runs only, the rule that judges them,
its one figure, and the narrow tables (rows not yet run folded away)."""

import io
import json
import re

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection
from PIL import Image

from pagcore.book import status, style
from pagcore.book.status import (
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    REPRODUCED_WITHIN,
    StatusRow,
    counts,
    reproduction_status,
)
from pagcore.orchestrate.experiments import RealDataExperiment
from pagcore.paper import reported
from pagcore.store.runs import RunStore
from pagcore.train.trainer import run_identity, run_name_for

PER_SCALE = 2 * 6 * 3 + 3 + 4 * 3  # Tables 1 and 2, Table 4, Figure 5


def store_run(store, config, kind, metrics):
    run = store.create(run_name_for(config, kind), run_identity(config, kind))
    run.write_json(
        "record.json",
        {
            "kind": kind,
            "status": "complete",
            "wall_seconds": 60.0,
            "sessions": [
                {"device": "cuda: NVIDIA H100 80GB HBM3", "finished": "2026-12-01T10:00:00+00:00", "git": "abc"}
            ],
        },
    )
    run.write_json("metrics.json", metrics)
    return run


def write_toy(path, pag_pgd=0.9):
    path.write_text(
        json.dumps(
            {
                "kind": "real",
                "summary": {
                    "vanilla": {"clean": 1.0, "pgd": 0.1},
                    "pag": {"clean": 1.0, "pgd": pag_pgd},
                    "seeds": [0, 1],
                },
                "parameters": {"epochs": 100},
                "device": "cpu: X (2 logical cores)",
                "finished": "2026-11-21T00:00",
            }
        )
    )
    return path


@pytest.fixture
def mixed(tmp_path):
    """A paper-scale vanilla run, a smoke class mean (never shown), a cpu-scale class mean and a toy record."""
    store = RunStore(tmp_path / "runs")
    experiment = RealDataExperiment("cifar10", store=store)
    store_run(store, experiment.config("vanilla", epochs=20), "real", {"clean": 0.9, "linf": 0.0, "l2": 0.01})
    store_run(store, experiment.config("class_mean"), "smoke", {"clean": 0.5, "linf": 0.5, "l2": 0.5})
    cpu = RealDataExperiment("cifar10", {"scale": "cpu"}, store=store)
    store_run(store, cpu.config("class_mean"), "real", {"clean": 0.6, "linf": 0.1, "l2": 0.3})
    return store, reproduction_status(store, write_toy(tmp_path / "toy.json"))


def test_status_lists_every_paper_number_and_fills_only_real_runs(mixed):
    _, rows = mixed
    assert len(rows) == 4 + 2 * PER_SCALE  # the toy at the paper's setting, the rest at both scales
    filled = [r for r in rows if r.ours is not None]
    # The CPU-scale class mean (lambda 0.4, Table 3's) answers Table 1 and Figure 5's lambda = 0.4 point.
    assert {(r.experiment, r.scale) for r in filled} == {
        ("Toy (Section 5.1)", "paper"),
        ("Table 1 (CIFAR-10)", "paper"),
        ("Table 1 (CIFAR-10)", "cpu"),
        ("Figure 5 (Class Mean, CIFAR-10)", "cpu"),
    }
    # The CPU-scale class mean fills a CPU-scale cell, never a paper-scale one.
    assert {(r.setting, r.scale) for r in filled if r.experiment.startswith("Table")} == {
        ("Vanilla", "paper"),
        ("Class Mean", "cpu"),
    }
    # Vanilla's clean (0.9 against 0.9361) is off by more than the tolerance, its l2 (0.01 against 0) and linf
    # are not; the toy's two clean accuracies match, its two PGD accuracies do not.
    assert counts(rows) == {
        "paper": {"cells": 4 + PER_SCALE, "measured": 4 + 3, "reproduced": 2 + 2},
        "cpu": {"cells": PER_SCALE, "measured": 6, "reproduced": 0},
    }
    vanilla_clean = next(r for r in filled if r.setting == "Vanilla" and r.metric == "clean" and r.dataset != "toy")
    assert vanilla_clean.scale == "paper" and vanilla_clean.key == "clean" and vanilla_clean.dataset == "cifar10"
    assert vanilla_clean.paper == reported.TABLES["cifar10"]["vanilla"]["clean"]
    assert abs(vanilla_clean.gap - (0.9 - 0.9361)) < 1e-12
    assert (
        vanilla_clean.schedule == "20 epochs, width 64"
        and "H100" in vanilla_clean.device
        and vanilla_clean.date == "2026-12-01"
    )
    # The smoke run of class mean does not count.
    assert all(r.ours is None for r in rows if r.setting == "Class Mean" and r.scale == "paper")
    toy_pgd = next(r for r in rows if r.dataset == "toy" and r.setting == "PAG" and r.key == "pgd")
    assert toy_pgd.ours == 0.9 and toy_pgd.schedule == "100 epochs, 2 seeds"


def test_status_without_any_run_says_not_run(tmp_path):
    rows = reproduction_status(RunStore(tmp_path), tmp_path / "absent.json")
    assert rows and all(r.ours is None and r.gap is None and r.verdict == NOT_RUN for r in rows)
    assert "No real-data run exists yet at any scale" in status.summary_sentences(rows)
    assert status.figure_reading(rows) == "No run has produced a number yet, so the figure has no points."


# -- the rule ---------------------------------------------------------------------------------------


def row(ours, paper=0.5, scale="paper", key="clean"):
    return StatusRow("Table 1 (CIFAR-10)", "Vanilla", key, paper, ours, scale, key=key, dataset="cifar10")


def test_the_tolerance_is_twice_the_papers_largest_seed_spread_rounded_up_to_a_point():
    widest = max(reported.SEED_ERROR_BARS["std"].values())
    assert REPRODUCED_WITHIN >= 2 * widest
    assert REPRODUCED_WITHIN == pytest.approx(0.02)
    assert REPRODUCED_WITHIN - 2 * widest < 0.01  # rounded up to the next whole point, no further


@pytest.mark.parametrize(
    ("ours", "expected"),
    [
        (0.5, REPRODUCED),
        (0.52, REPRODUCED),  # exactly at the tolerance counts
        (0.48, REPRODUCED),
        (0.5204, REPRODUCED),  # shown as +2.0: judged as shown
        (0.5206, NOT_REPRODUCED),  # shown as +2.1
        (0.47, NOT_REPRODUCED),
        (0.9, NOT_REPRODUCED),
        (None, NOT_RUN),
    ],
)
def test_a_paper_scale_number_is_reproduced_only_within_the_tolerance(ours, expected):
    assert row(ours).verdict == expected


@pytest.mark.parametrize("scale", ["cpu", "tiny"])
@pytest.mark.parametrize("ours", [0.5, 0.5001, 0.49, 0.1])
def test_a_reduced_scale_number_is_never_a_reproduction(scale, ours):
    """Whatever its distance, even none, a number outside the paper's scale is not comparable."""
    assert row(ours, scale=scale).verdict == NOT_COMPARABLE
    assert counts([row(ours, scale=scale)])[scale]["reproduced"] == 0


def test_the_tables_show_the_verdict_of_the_rule(mixed):
    _, rows = mixed
    measured = status.measured_tables(rows)
    verdicts = [line.split("|")[-2].strip().replace("\u00a0", " ") for line in table_lines(measured)]
    expected = [r.verdict for r in rows if r.ours is not None]
    assert verdicts == expected
    assert NOT_COMPARABLE in verdicts and REPRODUCED in verdicts and NOT_REPRODUCED in verdicts


# -- the words --------------------------------------------------------------------------------------


def test_the_summary_says_when_every_real_data_number_is_at_the_reduced_scale(tmp_path):
    store = RunStore(tmp_path / "runs")
    cpu = RealDataExperiment("cifar10", {"scale": "cpu"}, store=store)
    store_run(store, cpu.config("vanilla"), "real", {"clean": 0.9361, "linf": 0.0, "l2": 0.0})
    rows = reproduction_status(store, write_toy(tmp_path / "toy.json"))
    text = status.summary_sentences(rows)
    assert text.count(". ") == 1 and text.endswith(".")  # two sentences
    assert f"Of the paper's {4 + PER_SCALE} numbers, 4 have one of ours with the paper's data and network" in text
    assert "3 have one at the reduced cpu scale" in text
    assert "Every real-data number of ours is at the reduced cpu scale" in text
    assert "no paper-scale CIFAR-10 or STL-10 run exists" in text
    # The cpu vanilla equals the paper's numbers exactly, and still reproduces nothing.
    assert all(r.verdict == NOT_COMPARABLE for r in rows if r.scale == "cpu" and r.ours is not None)


def test_the_summary_counts_paper_scale_reproductions_when_there_are_some(mixed):
    _, rows = mixed
    text = status.summary_sentences(rows)
    assert "Every real-data number" not in text
    assert "At the paper's scale, 2 of the 3 real-data numbers with a run are reproduced" in text
    assert "no paper-scale STL-10 run exists yet" in text


def test_the_rule_is_stated_with_the_constant_the_verdicts_use():
    text = status.rule_text()
    assert f"within {100 * REPRODUCED_WITHIN:.1f} points" in text
    assert NOT_COMPARABLE in text and "never counted as a reproduction" in text


def test_the_figure_reading_is_computed_from_the_points(mixed):
    _, rows = mixed
    text = status.figure_reading(rows)
    # The paper scale: the toy's four and vanilla's three, of which 2 + 2 lie in the band.
    assert text.startswith("4 of the 7 paper-scale points lie inside the band")
    # Figure 5's λ = 0.4 is Table 1's class mean, one run: its three numbers are counted once, as drawn.
    assert "of the 3 cpu-scale points" in text
    assert text.endswith("; the 3 numbers that appear in two of the tables are drawn and counted once.")


# -- the figure -------------------------------------------------------------------------------------


def scatter_series(fig):
    """Per panel title: {series label: number of points}."""
    return {
        ax.get_title(): {c.get_label(): len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)}
        for ax in fig.axes
    }


def test_the_figure_draws_each_scale_as_its_own_series_with_the_diagonal_and_band(mixed):
    _, rows = mixed
    fig = status.comparison_figure(rows)
    try:
        paper, toy, cpu = (status.SERIES[name]["label"] for name in ("paper", "toy", "cpu"))
        # Figure 5's lambda = 0.4 point is Table 1's class mean: drawn once.
        assert scatter_series(fig) == {
            "clean": {paper: 1, toy: 2, cpu: 1},  # the toy's two clean numbers: two models, one place
            "ℓ∞ PGD-20": {paper: 1, cpu: 1},
            "ℓ2 PGD-20 (toy: PGD-10)": {paper: 1, toy: 2, cpu: 1},
        }
        # Colour and marker both set the cpu scale apart from the paper's.
        points = [c for ax in fig.axes for c in ax.collections if isinstance(c, PathCollection)]
        colour = {c.get_label(): tuple(c.get_facecolor()[0]) for c in points}
        assert colour[cpu] != colour[paper] and colour[toy] == colour[paper]
        # A scatter's legend entry draws its marker as a path: three series, three shapes.
        legend = fig.legends[0]
        shape = {
            label.get_text(): handle.get_paths()[0].vertices.round(3).tobytes()
            for label, handle in zip(legend.get_texts(), legend.legend_handles)
            if isinstance(handle, PathCollection)
        }
        assert len({shape[paper], shape[toy], shape[cpu]}) == 3
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == [paper, toy, cpu, "y = x", f"within ±{100 * REPRODUCED_WITHIN:.1f} points"]
        for ax in fig.axes:
            # The band is centred on the diagonal, REPRODUCED_WITHIN wide on each side.
            (band,) = [c for c in ax.collections if not isinstance(c, PathCollection)]
            ys = band.get_paths()[0].vertices[:, 1]
            assert ys.min() == pytest.approx(-100 * REPRODUCED_WITHIN)
            assert ys.max() == pytest.approx(100 + 100 * REPRODUCED_WITHIN)
            assert [line.get_xydata().tolist() for line in ax.lines] == [[[0, 0], [100, 100]]]
            # The legend lies outside every panel, once the layout has made room for it (on drawing).
            fig.canvas.draw()
            legend_box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
            assert not legend_box.overlaps(ax.get_window_extent(fig.canvas.get_renderer()))
        # As a notebook stores it, no wider than the book's text column, so never shrunk on the page.
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight", pad_inches=0.1)
        assert Image.open(buffer).width <= style.COLUMN_PIXELS
        sizes = [t.get_fontsize() for ax in fig.axes for t in (ax.title, ax.xaxis.label, *ax.get_xticklabels())]
        sizes += [t.get_fontsize() for t in fig.legends[0].get_texts()]
        assert min(sizes) >= 9
    finally:
        plt.close(fig)


def test_the_figure_without_runs_has_no_series(tmp_path):
    fig = status.comparison_figure(reproduction_status(RunStore(tmp_path), tmp_path / "absent.json"))
    try:
        assert all(not series for series in scatter_series(fig).values())
        assert [t.get_text() for t in fig.legends[0].get_texts()][-2:] == ["y = x", "within ±2.0 points"]
    finally:
        plt.close(fig)


# -- the tables -------------------------------------------------------------------------------------


def table_lines(markdown):
    """The body lines of every Markdown table in ``markdown``."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [line for line in lines if not line.startswith("|---") and not line.startswith("| setting")]


def test_rows_not_yet_run_are_folded_into_a_closed_dropdown_and_measured_rows_stay_out_of_it(mixed):
    _, rows = mixed
    folded = status.not_run_dropdowns(rows)
    blocks = re.findall(r":::\{dropdown\} (.*?)\n(.*?)\n:::", folded, flags=re.S)
    assert [title for title, _ in blocks] == [
        f"Not run at the paper's scale: {4 + PER_SCALE - 7} numbers (16 settings)",
        f"Not run at the cpu scale: {PER_SCALE - 6} numbers (15 settings)",
    ]
    assert ":open:" not in folded
    paper_block = blocks[0][1]
    assert "| Table 1 (CIFAR-10) | Vanilla |" not in paper_block  # measured at the paper's scale
    assert "| Table 1 (CIFAR-10) | Class Mean | 81.4% | 15.7% | 50.6% |" in paper_block
    assert "Toy" not in paper_block
    # Every measured row is in the visible tables, and none of them reads "not run".
    measured = status.measured_tables(rows)
    assert ":::" not in measured and "not run" not in measured
    assert len(table_lines(measured)) == sum(r.ours is not None for r in rows)


def test_everything_runs_folds_nothing(tmp_path):
    rows = [row(0.5), row(0.4, scale="cpu")]
    assert ":::" not in status.not_run_dropdowns(rows)


def cells(markdown):
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]


def test_the_tables_are_narrow_and_their_percentages_have_one_decimal(mixed):
    store, rows = mixed
    tables = [
        status.measured_tables(rows),
        status.not_run_dropdowns(rows),
        status.provenance_table(rows),
        status.seed_table(store),
    ]
    for markdown in tables:
        rows_of_cells = cells(markdown)
        assert all(len(line) <= 6 for line in rows_of_cells)
        # What a browser cannot wrap (per column, the longest run without a space or hyphen to break at)
        # fits the book's text column at 1280 px: about 80 characters at the table's font, of
        # which each cell's padding takes about two.
        unbreakable = [max(len(word) for word in re.split(r"[ \-]", cell)) for line in rows_of_cells for cell in line]
        columns = len(rows_of_cells[0])
        widest = [max(unbreakable[i::columns]) for i in range(columns)]
        assert sum(widest) + 2 * columns <= 80, (widest, markdown[:200])
        for value in re.findall(r"[\d.]+(?= ± |%)", markdown):
            assert re.fullmatch(r"\d+\.\d", value), value
    assert "ℓ∞" in tables[0] and "ℓ2" in tables[0]


def test_the_seed_table_shows_mean_and_std_over_seeds(tmp_path):
    store = RunStore(tmp_path / "runs")
    cpu = RealDataExperiment("cifar10", {"scale": "cpu"}, store=store)
    for seed, clean in enumerate((0.2, 0.3, 0.4)):
        store_run(store, cpu.config("one_image", seed=seed), "real", {"clean": clean, "linf": 0.1, "l2": 0.2})
    table = cells(status.seed_table(store))
    paper = reported.SEED_ERROR_BARS
    assert table[2] == ["paper (3 seeds)", "79.1 ± 0.7%", "15.9 ± 0.6%", "50.3 ± 0.9%"]
    assert paper["mean"]["clean"] == 0.7913
    assert table[3] == ["ours, paper scale", "not run", "not run", "not run"]
    assert table[4] == ["ours, cpu scale (3 of 3 seeds)", "30.0 ± 10.0%", "10.0 ± 0.0%", "20.0 ± 0.0%"]


def test_status_data_needs_no_jupyter():
    """The status page's data (and the report helpers it uses) import without IPython."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'IPython', 'ipywidgets', 'myst_nb'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pagcore.book.status, pagcore.book.text, pagcore.book.tables, pagcore.book.verdicts\n"
        "print(pagcore.book.text.percent(0.5))\n"
    )
    out = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "50.0%"


def test_the_page_has_a_heading_per_section_and_folds_what_was_not_run():
    """Jupyter Book builds the page's "On this page" contents from its ## headings."""
    from pathlib import Path

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "reproduction_status.ipynb"
    cells = ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "markdown"]
    sections = {line[3:]: cell for cell in cells for line in cell.splitlines() if line.startswith("## ")}
    assert len(sections) >= 5
    assert cells[0].index("{glue:text}`status_summary`") < cells[0].index("This page")  # the summary opens it
    assert "glue:figure} status_figure" in sections["The paper's numbers against ours"]
    assert "status_rule" in sections["When a number counts as reproduced"]
    assert "status_seeds" in sections["One-image seeds (Table 4)"]
    assert "status_not_run" in sections["Not run yet"]


def test_a_single_paper_run_is_judged_against_our_own_seed_spread_when_that_is_wider():
    from pagcore.book.status import NOT_REPRODUCED, REPRODUCED, WITHIN_SPREAD, StatusRow

    row = StatusRow("toy", "PAG", "ℓ2 PGD-10", paper=0.755, ours=0.826, dataset="toy")
    assert row.verdict == NOT_REPRODUCED  # 7.1 points against a 2-point tolerance
    row.own_spread = 0.17
    assert row.verdict == WITHIN_SPREAD  # within twice our 17-point seed spread: not told apart, not confirmed
    row.own_spread = 0.001
    assert row.verdict == NOT_REPRODUCED  # a narrow spread never loosens the paper's tolerance
    row.ours, row.own_spread = 0.765, 0.17
    assert row.verdict == REPRODUCED  # within the tolerance, whatever our spread


def test_the_figure_reading_counts_the_band_it_draws_and_names_the_wider_bound_apart(tmp_path):
    toy = json.loads(write_toy(tmp_path / "toy.json").read_text())
    paper_pag = reported.TOY["pag"]["pgd"]
    # Our PAG mean lies 6 points from the paper's, with a seed spread of 10 points: outside the drawn
    # 2-point band, inside the rule's twice-the-spread bound.
    toy["summary"]["pag"]["pgd"] = paper_pag + 0.06
    toy["per_seed"] = {
        str(i): {m: {"clean": 1.0, "pgd": paper_pag + 0.06 + d} for m in ("pag", "vanilla")}
        for i, d in enumerate((-0.1, 0.1))
    }
    (tmp_path / "toy.json").write_text(json.dumps(toy))
    rows = reproduction_status(RunStore(tmp_path / "runs"), tmp_path / "toy.json")
    pag_pgd = next(r for r in rows if r.dataset == status.TOY and r.setting == "PAG" and r.key == "pgd")
    assert pag_pgd.verdict == status.WITHIN_SPREAD
    text = status.figure_reading(rows)
    inside = sum(round(100 * abs(r.gap), 1) <= 100 * REPRODUCED_WITHIN for r in rows if r.ours is not None)
    assert text.startswith(f"{inside} of the toy experiment's 4 points lie inside the band")
    assert "more lie outside it but within twice our seed spread" in text
    summary = status.summary_sentences(rows)
    assert "2 only within our seed spread: Vanilla ℓ2 PGD-10 and PAG ℓ2 PGD-10; by" in summary  # named numbers
    assert "(2 reproduced within 2.0 points: Vanilla clean and PAG clean; 2 only" in summary
    # Ours on the toy is a mean over seeds: its table shows the spread the verdict used.
    table = status.measured_tables(rows)
    assert f"{100 * (paper_pag + 0.06):.1f} ± 14.1%" in table and "mean ± standard deviation over our seeds" in table


def test_a_table_measured_on_a_test_subset_says_so_in_its_caption():
    stl = "5,000-image class-balanced subset of the STL-10 test set"
    rows = [
        StatusRow("Table 2 (STL-10)", "Vanilla", "clean", 0.5, 0.4, "cpu", key="clean", dataset="stl10", test_set=stl),
        StatusRow("Table 1 (CIFAR-10)", "Vanilla", "clean", 0.5, 0.4, "cpu", key="clean", dataset="cifar10"),
    ]
    rows[1].test_set = "all 10,000 CIFAR-10 test images"
    measured = status.measured_tables(rows)
    assert f"Table 2 (STL-10), cpu scale (reduced protocol); ours on the {stl}, the paper's on the whole" in measured
    assert measured.count("the paper's on the whole test set") == 1
