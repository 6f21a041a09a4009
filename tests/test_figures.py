"""The book's figures read: lettering of at least 9 points that stays inside the image, legends
beside the axes rather than on them, accuracies in percent, rows named by what they are (never a
run's hash), and PAG grids that show every picture the runs stored."""

import io
import itertools

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from pagcore.book import figures, style
from pagcore.evaluate.final import PICTURE_EPS, PICTURE_STEPS, save_pag_grid
from pagcore.store.runs import RunStore, run_name

matplotlib.use("Agg")

CLASSES = ("airplane", "automobile", "bird", "cat")
TEST_INDEX = (3, 6, 25, 0)
MIN_POINTS = 9  # the smallest lettering a reader of the page is asked to read
COLUMN_PIXELS = 672  # the widest a figure is shown in the text column of a 1280-pixel-wide page
LABELS = ("Vanilla (cpu)", "Adversarial training ℓ∞ (RIGD teacher) (cpu)", "λ = 0.4 (cpu)")


def make_run(store, i, picture_eps=None):
    """A complete stored run with a history and a PAG grid of len(TEST_INDEX) images, named as the store names runs."""
    params = {"dataset": "cifar10", "seed": i}
    run = store.create(run_name(f"cifar10-cpu-run{i}", params), params)
    run.write_json("history.json", [{"epoch": e, "test_accuracy": 0.2 + 0.1 * e, "loss": 2.0 / e} for e in (1, 2, 3)])
    settings = {"pgd_steps": 20, "picture_images": len(TEST_INDEX), "picture_eps": picture_eps, "eval_seed": 0}
    run.write_json("metrics.json", {"clean": 0.5, "linf": 0.1, "l2": 0.2, "settings": settings})
    grid = torch.rand(len(TEST_INDEX), 1 + len(CLASSES), 3, 8, 8, generator=torch.Generator().manual_seed(i))
    save_pag_grid(run.artifacts, grid, torch.tensor(TEST_INDEX))
    return run


@pytest.fixture
def runs(tmp_path):
    store = RunStore(tmp_path)
    return {label: make_run(store, i) for i, label in enumerate(LABELS)}


def texts(fig):
    """Every text the figure shows: titles, axis and tick labels, legends, free text."""
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def exported_width(fig):
    """Width in pixels of the PNG a notebook stores for ``fig`` (IPython's inline export)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight", pad_inches=0.1)
    return Image.open(buffer).width


def assert_reads(fig):
    """At most a text column wide as a notebook stores it, so never shrunk on the page; no lettering
    under 9 points; nothing drawn beyond the figure's left or right edge."""
    assert fig.dpi == style.DPI
    assert exported_width(fig) <= COLUMN_PIXELS
    small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() < MIN_POINTS]
    assert not small, f"lettering under {MIN_POINTS} pt: {small}"
    extent = fig.get_tightbbox(fig.canvas.get_renderer())
    assert extent.x0 >= -0.02 and extent.x1 <= fig.get_figwidth() + 0.02, f"drawn beyond the edges: {extent}"


def legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def assert_legends_outside(fig, expected=1):
    found = legends(fig)
    assert len(found) == expected
    renderer = fig.canvas.get_renderer()
    for legend, ax in itertools.product(found, fig.axes):
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)), "legend on the axes"


def assert_no_run_names(fig):
    named = [t.get_text() for t in texts(fig) if figures.RUN_HASH.search(t.get_text())]
    assert not named, f"run names in the figure: {named}"


def lines_data(fig):
    return [y for ax in fig.axes for line in ax.get_lines() for y in line.get_ydata()]


def test_training_curves_read(runs):
    fig = figures.training_curves(runs)
    assert_reads(fig)
    assert_legends_outside(fig)
    assert_no_run_names(fig)
    accuracy = fig.axes[0]
    assert accuracy.get_ylim() == (0, 100) and "%" in accuracy.get_ylabel()
    assert max(line.get_ydata().max() for line in accuracy.get_lines()) == pytest.approx(50.0)
    # Every run's line differs from every other's in colour or dash pattern, and in marker.
    styles = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in accuracy.get_lines()]
    assert len({s[:2] for s in styles}) == len({s[2] for s in styles}) == len(runs)
    plt.close(fig)


def test_accuracy_vs_lambda_reads_in_percent_with_the_legend_below():
    lams = [0.0, 0.01, 0.1, 0.4, 1.0]
    ours = {"clean": [0.8, 0.8, 0.7, 0.3, 0.25], "ℓ∞": [0.0, 0.0, 0.06, 0.19, 0.17], "ℓ2": [0, 0, 0.35, 0.27, None]}
    paper = {"clean": [0.94, 0.93, 0.88, 0.81, 0.73]}
    empty = {name: [None] * len(lams) for name in ours}
    fig = figures.accuracy_vs_lambda_figure(lams, {"paper scale": (empty, paper), "cpu scale": (ours, paper)})
    assert_reads(fig)
    assert_legends_outside(fig)
    assert "no run yet" in fig.axes[0].get_title() and "no run yet" not in fig.axes[1].get_title()
    assert max(lines_data(fig)) == pytest.approx(94.0)
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["0", "0.01", "0.1", "0.4", "1"]
    plt.close(fig)


def test_accuracy_vs_lambda_on_a_callers_axes_keeps_the_fonts_and_puts_the_legend_beside():
    with matplotlib.rc_context({"font.size": 5, "xtick.labelsize": 5, "ytick.labelsize": 5}):
        fig, ax = plt.subplots(figsize=(5, 3), dpi=style.DPI, layout="constrained")
        figures.plot_accuracy_vs_lambda(ax, [0.0, 1.0], {"pgd": [0.2, 0.5]}, title="pgd accuracy")
    assert_reads(fig)
    assert_legends_outside(fig)
    plt.close(fig)


def test_decision_boundary_fonts_are_the_books_on_any_axes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)) * 30
    y = (x[:, 0] > 0).long()
    with matplotlib.rc_context({"font.size": 5, "xtick.labelsize": 5, "ytick.labelsize": 5}):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=style.DPI, layout="constrained")
        figures.plot_decision_boundary(ax, model, x, y, x_adv=x + 1, title="vanilla (seed 0)", resolution=20)
    assert_reads(fig)
    plt.close(fig)
    fig = figures.decision_boundary_figure(
        {"vanilla (seed 0)": model, "pag (seed 0)": model}, x, y, attack=lambda m, a, b: a + 1, resolution=20
    )
    assert_reads(fig)
    assert_legends_outside(fig)
    plt.close(fig)


def test_pag_grid_shows_every_stored_picture_with_readable_row_labels(runs):
    fig = figures.pag_grid_figure(runs, {}, CLASSES)
    assert_reads(fig)
    assert_no_run_names(fig)
    pictures = [ax for ax in fig.axes if ax.get_images()]
    assert len(pictures) == len(runs) * len(TEST_INDEX) * (1 + len(CLASSES))
    shown = " ".join(t.get_text() for t in texts(fig))
    assert all(f"test-set index {i}" in shown for i in TEST_INDEX)

    renderer = fig.canvas.get_renderer()
    row_labels = [t for t in fig.texts if t.get_text().replace("\n", " ") in LABELS]
    assert len(row_labels) == len(runs) * len(TEST_INDEX)
    boxes = [t.get_window_extent(renderer) for t in row_labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), "row labels collide"
    first_picture = min(ax.get_window_extent(renderer).x0 for ax in pictures)
    assert all(box.x0 >= 0 and box.x1 < first_picture for box in boxes), "a row label runs off or into the pictures"
    plt.close(fig)


def test_pag_grid_of_one_run_without_stored_indices(tmp_path):
    """What the run explorer shows: one run, whose grid has no test indices stored with it."""
    store = RunStore(tmp_path)
    run = store.create("a", {"dataset": "cifar10"})
    run.artifacts.mkdir(parents=True)
    save_pag_grid(run.artifacts, torch.rand(2, 11, 3, 8, 8), None)
    fig = figures.pag_grid_figure({"λ = 1": run}, None, tuple("abcdefghij"))
    assert len([ax for ax in fig.axes if ax.get_images()]) == 2 * 11
    assert {"image 1 of 2", "image 2 of 2"} <= {t.get_text() for t in fig.texts}
    assert_reads(fig)
    plt.close(fig)


def test_pag_picture_attack_is_read_from_the_runs(tmp_path):
    store = RunStore(tmp_path)
    default = {"a": make_run(store, 0)}
    attack = figures.pag_picture_attack(default)
    assert attack == {"norm": "l2", "eps": PICTURE_EPS["cifar10"], "steps": PICTURE_STEPS, "images": len(TEST_INDEX)}
    caption = figures.pag_picture_caption(attack)
    assert f"ε = {PICTURE_EPS['cifar10']:g}" in caption and f"{PICTURE_STEPS} steps" in caption and "ℓ2" in caption
    assert f"the {len(TEST_INDEX)} test images" in caption
    mixed = {**default, "b": make_run(store, 1, picture_eps=4.0)}
    assert figures.pag_picture_attack(mixed)["eps"] == (4.0, PICTURE_EPS["cifar10"])
    assert "ε = 4 or 10" in figures.pag_picture_caption(figures.pag_picture_attack(mixed))
    assert figures.pag_picture_attack({"c": None}) is None


def test_a_run_name_is_refused_as_a_label(runs):
    named = {run.name: run for run in runs.values()}
    assert figures.RUN_HASH.search(next(iter(named)))
    for draw in (
        lambda: figures.training_curves(named),
        lambda: figures.pag_grid_figure(named, {}, CLASSES),
        lambda: figures.alignment_scatter({f"reference {name}": [(0.1, 0.2)] for name in named}),
        lambda: figures.accuracy_vs_radius({"ℓ2": {name: ([0, 1], [0.5, 0.1]) for name in named}}),
    ):
        with pytest.raises(ValueError, match="run's name"):
            draw()
    plt.close("all")
    assert figures.readable("cifar10 (cpu scale) class_mean λ=0.4 s0") == "cifar10 (cpu scale) class_mean λ=0.4 s0"


def test_masking_figures_read_in_percent_with_or_without_runs():
    curves = {
        f"cifar10 (cpu scale) {what} s0": ([0, 0.5, 1, 2, 4, 8, 16, 32], [0.8, 0.6, 0.4, 0.2, 0.1, 0.0, 0.0, 0.0])
        for what in ("vanilla", "class_mean λ=0.4", "nearest_neighbor λ=0.4", "adversarial l2", "rigd λ=0.4")
    }
    fig = figures.accuracy_vs_radius({"ℓ∞": curves, "ℓ2": curves})
    assert_reads(fig)
    assert_legends_outside(fig)
    assert max(lines_data(fig)) == pytest.approx(80.0) and fig.axes[0].get_ylim() == (0, 100)
    plt.close(fig)
    groups = {"reference: cifar10 (cpu scale) adversarial l2 s0": [(0.1, 0.2), (0.4, 0.45)]}
    fig = figures.alignment_scatter(groups)
    assert_reads(fig)
    assert_legends_outside(fig)
    assert fig.axes[0].collections[0].get_offsets()[:, 1].max() == pytest.approx(45.0)
    plt.close(fig)
    # Two dozen runs: the legend below grows the figure instead of covering the panels.
    many = {
        f"cifar10 (cpu scale) a run of a kind with a long name, seed {i}": curves[next(iter(curves))] for i in range(24)
    }
    fig = figures.accuracy_vs_radius({"ℓ∞": many, "ℓ2": many})
    assert_reads(fig)
    assert_legends_outside(fig)
    renderer = fig.canvas.get_renderer()
    assert all(ax.get_window_extent(renderer).height > 0.25 * fig.get_figwidth() * fig.dpi for ax in fig.axes)
    plt.close(fig)
    # Panels per dataset and threat model: two to a row, one style per label on every panel, whatever
    # labels a panel lacks; a last row with one panel keeps the radius axis on the panel above the gap.
    fewer = dict(list(curves.items())[1:])
    grid = {"CIFAR-10, ℓ∞": curves, "CIFAR-10, ℓ2": curves, "STL-10, ℓ∞": fewer, "STL-10, ℓ2": fewer}
    for panels in (grid, dict(list(grid.items())[:3])):
        fig = figures.accuracy_vs_radius(panels)
        assert_reads(fig)
        assert_legends_outside(fig)
        shown = [ax for ax in fig.axes if ax.get_visible()]
        assert len(shown) == len(panels) and len({round(ax.get_position().y0, 3) for ax in shown}) == 2
        lowest_of_column = {4: [False, False, True, True], 3: [False, True, True]}[len(panels)]
        assert [bool(ax.get_xlabel()) for ax in shown] == lowest_of_column
        fig.canvas.draw()
        lowest = [ax for ax in shown if ax.get_xlabel()]
        assert all(any(t.get_text() for t in ax.get_xticklabels()) for ax in lowest)
        styles = [{line.get_label(): (line.get_color(), line.get_marker()) for line in ax.lines} for ax in shown]
        assert len(set(styles[0].values())) == len(curves)
        assert all(style[label] == styles[0][label] for style in styles for label in style)
        plt.close(fig)
    for fig in (figures.accuracy_vs_radius({"ℓ∞": {}, "ℓ2": {}}), figures.alignment_scatter({})):
        assert_reads(fig)
        assert_legends_outside(fig, expected=0)
        assert "no evaluated run yet" in " ".join(t.get_text() for t in texts(fig))
        plt.close(fig)


def test_seed_spread_shows_every_seed_and_the_papers_error_bar():
    paper = {"mean": {"clean": 0.79, "linf": 0.16, "l2": 0.5}, "std": {"clean": 0.01, "linf": 0.01, "l2": 0.01}}
    seeds = [{"clean": c, "linf": c / 4, "l2": c / 2} for c in (0.2, 0.22, 0.15)]
    fig = figures.seed_spread_figure({"ours, cpu scale": seeds, "ours, paper scale": []}, {**paper, "seeds": 3})
    assert_reads(fig)
    assert_legends_outside(fig)
    ax = fig.axes[0]
    single = [c for c in ax.collections if len(c.get_offsets()) == len(seeds)]
    assert len(single) == 3  # one column of seeds per metric
    assert single[0].get_offsets()[:, 1].max() == pytest.approx(22.0)
    shown = " ".join(t.get_text() for t in texts(fig))
    assert "paper scale" not in shown and "over 3 seeds" in shown
    plt.close(fig)


def test_figure_functions_leave_the_global_style_alone(runs):
    before = dict(matplotlib.rcParams)
    plt.close(figures.training_curves(runs))
    assert dict(matplotlib.rcParams) == before


def test_k_study_names_each_point_by_its_k_without_names_colliding():
    accuracies = {k: {"clean": 0.31 + k / 1000, "linf": 0.19, "l2": 0.26} for k in (1, 2, 5, 10)}
    seconds = {1: 80.0, 2: 101.0, 5: 175.0, 10: None}  # close times, and one without a history
    fig = figures.accuracy_vs_k_figure(accuracies, seconds, preset_k=2, ks=(1, 2, 5, 10))
    assert_reads(fig)
    assert_legends_outside(fig)
    by_k, by_cost = fig.axes
    assert by_k.get_ylim() == (0, 100) and max(lines_data(fig)) == pytest.approx(32.0)
    assert [t.get_text() for t in by_k.get_xticklabels()] == ["1", "2", "5", "10"]
    assert all(len(line.get_xdata()) == 3 for line in by_cost.get_lines())
    renderer = fig.canvas.get_renderer()
    names = [t for t in by_cost.texts if t.get_text().startswith("k = ")]
    assert [t.get_text() for t in names] == ["k = 1", "k = 2", "k = 5"]
    boxes = [t.get_window_extent(renderer) for t in names]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2)), "names of points collide"
    plt.close(fig)
    fig = figures.accuracy_vs_k_figure({}, {}, ks=(1, 2))
    assert_reads(fig)
    assert "no real run yet" in " ".join(t.get_text() for t in texts(fig))
    plt.close(fig)


def test_a_photograph_is_a_jpeg_of_the_figure_at_the_books_resolution():
    fig = plt.figure(figsize=(style.TEXT_WIDTH, 2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.random.default_rng(0).random((64, 256, 3)))
    ax.set_axis_off()
    photo = style.photograph(fig)
    plt.close(fig)
    assert photo.format == "jpeg" and photo.data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(photo.data)) as image:
        assert image.width <= style.COLUMN_PIXELS  # shown at its own size in the text column


def test_a_pag_grid_is_read_as_a_comparison_of_models_only_when_one_attack_made_every_row():
    assert figures.pag_grid_reading(None) == "There are no pictures to read yet."
    one = {"norm": "l2", "eps": 10.0, "steps": 60, "images": 4}
    assert figures.pag_grid_reading(one).startswith(figures.PAG_ROW_READING)
    assert "the rows compare the models, not the attacks" in figures.pag_grid_reading(one)
    mixed = {**one, "steps": (20, 60)}
    assert "compare them with care" in figures.pag_grid_reading(mixed)
