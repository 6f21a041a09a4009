"""Figures of the book, all in its one style (:mod:`pagcore.book.style`).

* Fig. 3, the toy decision boundaries: :func:`plot_decision_boundary` (one panel) and
  :func:`decision_boundary_figure` (one panel per model).
* Figs. 1 and 4, the PAG pictures: :func:`pag_grid_figure`, with :func:`pag_picture_attack` and
  :func:`pag_picture_caption` for the attack that made them, as stored with the runs.
* Curves: :func:`training_curves`, accuracy against λ (:func:`plot_accuracy_vs_lambda`,
  :func:`accuracy_vs_lambda_figure`), against the attack's radius (:func:`accuracy_vs_radius`),
  against gradient alignment (:func:`alignment_scatter`), the spread over seeds
  (:func:`seed_spread_figure`), and accuracy against k and its cost (:func:`accuracy_vs_k_figure`).

Accuracies are drawn as percentages on a 0-100 axis, as the tables print them. Every legend sits
outside the axes. A series is named by what it is (method, λ, seed, scale), never by the name of
the run in the store: functions refuse a label that contains a run name's hash (:func:`readable`).
"""

from __future__ import annotations

import math
import re
import statistics
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.book.style import (
    COLORS,
    DPI,
    FONT_SIZE,
    MARKERS,
    SMALL_FONT_SIZE,
    TEXT_WIDTH,
    book_style,
    legend_outside,
    line_style,
    style_axes,
    text_width,
)
from pagcore.book.text import METRIC_COLUMNS, NORM_WORDS
from pagcore.evaluate.final import load_pag_grid, load_pag_grid_index, picture_attack

# Okabe-Ito blue and vermillion, with different markers for a grey-scale print.
CLASS_COLORS = (COLORS[0], COLORS[3])
CLASS_MARKERS = ("o", "^")

# The store's run names end in a hash of the run's identity: 10 hex digits (pagcore.store.runs.run_name).
RUN_HASH = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{10}(?![0-9A-Za-z])")


def readable(label: str) -> str:
    """``label`` itself, if it names a row rather than a run of the store; else a ValueError."""
    if RUN_HASH.search(str(label)):
        raise ValueError(
            f"{label!r} looks like a run's name: label a figure's series by what it is (method, λ, seed, scale)"
        )
    return str(label)


def percent_axis(ax: Axes, axis: str = "y", label: str = "accuracy (%)") -> None:
    """A 0-100 accuracy axis; values are drawn as percentages (100 * fraction)."""
    if axis == "y":
        ax.set_ylim(0, 100)
        ax.set_ylabel(label)
    else:
        ax.set_xlim(0, 100)
        ax.set_xlabel(label)


def no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=FONT_SIZE)


# -- Fig. 3: the toy decision boundaries ------------------------------------------------------------------


@torch.no_grad()
def plot_decision_boundary(
    ax: Axes,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    x_adv: Tensor | None = None,
    extent: tuple[float, float, float, float] = (-65.0, 65.0, -130.0, 130.0),
    resolution: int = 300,
    title: str = "",
    max_arrows: int = 60,
) -> None:
    """Background coloured by the predicted class, test points on top (the style of Fig. 3).

    With ``x_adv``, arrows join a subset of test points to their adversarial versions, which
    shows whether the attack found the other class off the data line. The fonts are the book's
    whatever figure ``ax`` belongs to.
    """
    x0, x1, y0, y1 = extent
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, resolution), torch.linspace(y0, y1, resolution), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    with eval_mode(model), torch.no_grad():
        predicted = model(grid).argmax(dim=1).view(resolution, resolution).numpy()

    cmap = ListedColormap([c + "40" for c in CLASS_COLORS])  # translucent class colours
    ax.imshow(
        predicted, origin="lower", extent=extent, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
    )
    for label, (color, marker) in enumerate(zip(CLASS_COLORS, CLASS_MARKERS)):
        pts = x[y == label].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=12, color=color, marker=marker, label=f"class {label}", zorder=3)
    if x_adv is not None:
        step = max(1, len(x) // max_arrows)
        start, end = x[::step].numpy(), x_adv[::step].numpy()
        ax.quiver(
            start[:, 0],
            start[:, 1],
            end[:, 0] - start[:, 0],
            end[:, 1] - start[:, 1],
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.004,
            color="black",
            zorder=4,
        )
    ax.grid(False)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    style_axes(ax)


def decision_boundary_figure(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    attack: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    **kwargs: Any,
) -> Figure:
    """Fig. 3: one decision-boundary panel per model (keyed by its title), the class legend below.

    With ``attack``, each panel shows arrows from test points to their attacked versions.
    ``kwargs`` go to :func:`plot_decision_boundary`.
    """
    with book_style():
        fig, axes = plt.subplots(
            1, len(models), figsize=(TEXT_WIDTH, 0.55 * TEXT_WIDTH), squeeze=False, sharey=True, layout="constrained"
        )
        for i, (ax, (title, model)) in enumerate(zip(axes[0], models.items())):
            x_adv = attack(model, x, y) if attack is not None else None
            plot_decision_boundary(ax, model, x, y, x_adv=x_adv, title=readable(title), **kwargs)
            if i:
                ax.set_ylabel("")
        legend_outside(fig, where="below", markerscale=1.5)
    return fig


# -- Figs. 1 and 4: PAG pictures ------------------------------------------------------------------------

# Layout of a picture grid, in inches.
GRID_CELL_GAP = 0.03  # between two pictures
GRID_INPUT_GAP = 0.08  # more after the unchanged image, which is not an attack's output
GRID_LABEL_GAP = 0.08  # between a row label and its row
GRID_BLOCK_GAP = 0.15  # between two blocks (test images)
GRID_TITLE_HEIGHT = 0.28  # a block's title line
GRID_LABEL_WIDTHS = tuple(w / 10 for w in range(10, 31))  # left margins tried for the row labels
LINE_HEIGHT = 1.25 * SMALL_FONT_SIZE / 72  # one line of a row label, in inches


def wrap_to_width(label: str, width: float) -> str:
    """``label`` broken into as few lines as fit ``width`` inches at the small font size."""
    for chars in range(len(label), 0, -1):
        wrapped = "\n".join(textwrap.wrap(label, chars, break_long_words=False)) or label
        if text_width(wrapped) <= width:
            return wrapped
    return "\n".join(textwrap.wrap(label, 1, break_long_words=False))


def grid_label_layout(labels: Sequence[str], columns: int, right: float = 0.0) -> tuple[float, float, list[str]]:
    """The narrowest left margin whose wrapped row labels each fit the height of one row of pictures,
    with ``right`` inches kept free on the right: (margin, picture size, wrapped labels), in inches."""
    for margin in GRID_LABEL_WIDTHS:
        cell = (TEXT_WIDTH - margin - GRID_LABEL_GAP - GRID_INPUT_GAP - right) / columns
        wrapped = [wrap_to_width(label, margin) for label in labels]
        if all((w.count("\n") + 1) * LINE_HEIGHT <= cell for w in wrapped):
            return margin, cell, wrapped
    return margin, cell, wrapped


def column_header(names: Sequence[str], cell: float) -> tuple[float, float, float]:
    """(rotation in degrees, height, overhang on the right) of the column names above a block of
    pictures, in inches: level where every name fits its column, else slanted up to the right from
    the middle of its column, so that neighbours cannot overlap."""
    widths = [text_width(name) for name in names]
    if max(widths) <= cell - GRID_CELL_GAP:
        return 0.0, LINE_HEIGHT + 0.05, 0.0
    slant = math.sin(math.radians(45))
    return 45.0, max(widths) * slant + LINE_HEIGHT + 0.05, max(0.0, (widths[-1] + LINE_HEIGHT) * slant - cell / 2)


def _picture_blocks(runs: Mapping[str, Any], labels: Mapping[str, str]) -> dict[Any, list[tuple[str, Tensor]]]:
    """The stored PAG pictures of ``runs``, grouped by test image: (row label, pictures) per run."""
    blocks: dict[Any, list[tuple[str, Tensor]]] = {}
    for key, run in runs.items():
        grid = load_pag_grid(run.artifacts) if run is not None else None
        if grid is None:
            continue
        index = load_pag_grid_index(run.artifacts)
        for position, pictures in enumerate(grid):
            image = ("test", index[position]) if index is not None else ("position", position)
            blocks.setdefault(image, []).append((readable(labels.get(key, key)), pictures))
    return blocks


def _draw_picture_row(
    fig: Figure, label: str, pictures: Tensor, *, top: float, margin: float, cell: float, height: float
):
    """One run's row of a PAG grid: its label right-aligned in the margin, then its pictures
    (positions in inches from the bottom-left corner)."""
    fig.text(
        margin / TEXT_WIDTH,
        (top + cell / 2) / height,
        label,
        fontsize=SMALL_FONT_SIZE,
        ha="right",
        va="center",
        multialignment="right",
    )
    for c, picture in enumerate(pictures):
        left = margin + GRID_LABEL_GAP + GRID_INPUT_GAP * (c > 0) + c * cell
        size = cell - GRID_CELL_GAP
        ax = fig.add_axes((left / TEXT_WIDTH, top / height, size / TEXT_WIDTH, size / height))
        # Enlarged pictures keep their pixels; shrunk ones are filtered, not decimated into aliases.
        shrunk = size * DPI < picture.shape[-1]
        image = np.clip(picture.numpy().transpose(1, 2, 0), 0, 1)
        ax.imshow(image, interpolation="antialiased" if shrunk else "nearest")
        ax.set_axis_off()


def pag_grid_figure(
    runs: Mapping[str, Any], labels: Mapping[str, str] | None = None, class_names: Sequence[str] = ()
) -> Figure | None:
    """Every stored PAG picture of ``runs`` (keyed by a label naming the row): one block per test
    image, and in it one row per run, the unchanged image first, then the image pushed towards each
    class by the targeted attack of :func:`pag_picture_attack`. ``labels`` may rename keys.
    None if no run has pictures."""
    blocks = _picture_blocks(runs, labels or {})
    if not blocks:
        return None

    columns = max(len(pictures) for rows in blocks.values() for _, pictures in rows)
    names = ("input", *class_names)[:columns]
    row_labels = list(dict.fromkeys(label for rows in blocks.values() for label, _ in rows))
    margin, cell, wrapped = grid_label_layout(row_labels, columns)
    rotation, header, overhang = column_header(names, cell) if names else (0.0, 0.0, 0.0)
    if overhang:  # make room for the last column's slanted name
        margin, cell, wrapped = grid_label_layout(row_labels, columns, right=overhang)
    wrapped_of = dict(zip(row_labels, wrapped))
    heights = [GRID_TITLE_HEIGHT + header + len(rows) * cell for rows in blocks.values()]
    height = sum(heights) + GRID_BLOCK_GAP * (len(blocks) - 1)

    with book_style():
        fig = plt.figure(figsize=(TEXT_WIDTH, height))
        top = height  # inches from the bottom edge, going down
        for number, ((kind, which), rows) in enumerate(blocks.items(), start=1):
            where = f": test-set index {which}" if kind == "test" else ""
            fig.text(
                0,
                (top - GRID_TITLE_HEIGHT / 2) / height,
                f"image {number} of {len(blocks)}{where}",
                va="center",
                fontweight="bold",
            )
            top -= GRID_TITLE_HEIGHT + header
            for c, name in enumerate(names):
                x = margin + GRID_LABEL_GAP + GRID_INPUT_GAP * (c > 0) + (c + 0.5) * cell
                fig.text(
                    x / TEXT_WIDTH,
                    (top + 0.04) / height,
                    name,
                    fontsize=SMALL_FONT_SIZE,
                    rotation=rotation,
                    rotation_mode="anchor",
                    ha="left" if rotation else "center",
                    va="bottom",
                )
            for label, pictures in rows:
                top -= cell
                _draw_picture_row(fig, wrapped_of[label], pictures, top=top, margin=margin, cell=cell, height=height)
            top -= GRID_BLOCK_GAP
    return fig


def pag_picture_attack(runs: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the stored PAG pictures of ``runs`` were made, read from each run's dataset and stored
    evaluation settings: ``{"norm", "eps", "steps", "images"}``, each the value all runs share, or
    the sorted tuple of their values where they differ. None if no run has pictures."""
    seen: dict[str, set] = {"norm": set(), "eps": set(), "steps": set(), "images": set()}
    for run in runs.values():
        grid = load_pag_grid(run.artifacts) if run is not None else None
        if grid is None:
            continue
        attack = picture_attack(run.params["dataset"], (run.metrics or {}).get("settings"))
        for key in ("norm", "eps", "steps"):
            seen[key].add(attack[key])
        seen["images"].add(len(grid))
    if not seen["images"]:
        return None
    return {key: next(iter(values)) if len(values) == 1 else tuple(sorted(values)) for key, values in seen.items()}


def pag_picture_caption(attack: Mapping[str, Any] | None) -> str:
    """The pictures and the attack of :func:`pag_picture_attack` in words, to follow "PAG pictures of"
    in a figure's caption."""
    if attack is None:
        return "the runs, none of which has stored pictures yet"

    def either(value):
        values = value if isinstance(value, tuple) else (value,)
        return " or ".join(f"{v:g}" if isinstance(v, float | int) else NORM_WORDS.get(v, v) for v in values)

    norm, eps, steps = (either(attack[key]) for key in ("norm", "eps", "steps"))
    return (
        f"the {either(attack['images'])} test images the runs stored, each pushed towards every class by a "
        f"targeted {norm} PGD of radius ε = {eps} in {steps} steps"
    )


PAG_ROW_READING = (
    "Read each row from left to right: where the attack has painted features of the column's class, the "
    "model's input-gradients are perceptually aligned; where it has added only texture-like noise, they are not."
)
"""How every PAG grid of the book is read."""


def pag_grid_reading(attack: Mapping[str, Any] | None) -> str:
    """How to read a PAG grid made by :func:`pag_picture_attack`'s ``attack``, and whether its rows
    compare models (one attack for all) or need care (the attack differs between rows)."""
    if attack is None:
        return "There are no pictures to read yet."
    # A tuple in the attack's settings means that the rows were not all made with the same attack.
    shared = not any(isinstance(attack[key], tuple) for key in ("norm", "eps", "steps"))
    return PAG_ROW_READING + (
        " Every row had the same attack, so the rows compare the models, not the attacks."
        if shared
        else " The rows were not all made with the same attack (see the caption), so compare them with care."
    )


# -- curves ---------------------------------------------------------------------------------------------


def training_curves(runs: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Figure | None:
    """Clean test accuracy (%) and training loss per epoch of every stored run (keyed by a label
    naming the row; ``labels`` may rename keys), one style per run, the legend below; None if no
    run has a history."""
    labels = labels or {}
    available = {row: run for row, run in runs.items() if run is not None and run.history}
    if not available:
        return None
    with book_style():
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 0.75 * TEXT_WIDTH), layout="constrained")
        for i, (row, run) in enumerate(available.items()):
            label = readable(labels.get(row, row))
            epochs = [h["epoch"] for h in run.history]
            # A marker on every epoch would hide the lines: about eight per line, staggered between lines.
            every = max(1, len(epochs) // 8)
            style = {**line_style(i), "markevery": (i % every, every), "label": label}
            ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in run.history], **style)
            ax_loss.plot(epochs, [h["loss"] for h in run.history], **style)
        percent_axis(ax_acc, label="clean test accuracy (%)")
        ax_acc.set_xlabel("epoch")
        ax_loss.set(xlabel="epoch", ylabel="training loss (own objective)", yscale="log")
        legend_outside(fig, where="below")
    return fig


def plot_accuracy_vs_lambda(
    ax: Axes,
    lams: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    paper: Mapping[str, Sequence[float | None]] | None = None,
    title: str = "",
    legend: bool = True,
) -> None:
    """Accuracy (%) against λ on a symmetric-log axis: our series solid with filled markers, the
    paper's dashed with open ones, each metric in its own colour and marker. A ``None`` (a run not
    made, a λ the paper did not report) leaves its point out. With ``legend``, the legend goes to
    the right of ``ax``; :func:`accuracy_vs_lambda_figure` puts one below all panels instead."""
    for i, (label, values) in enumerate(series.items()):
        style = line_style(i)
        ours = [(lam, 100 * v) for lam, v in zip(lams, values) if v is not None]
        if ours:
            ax.plot(*zip(*ours), **{**style, "linestyle": "-"}, label=readable(label), clip_on=False, zorder=3)
        theirs = [(lam, 100 * v) for lam, v in zip(lams, (paper or {}).get(label, [])) if v is not None]
        if theirs:
            ax.plot(
                *zip(*theirs),
                **{**style, "linestyle": "--"},
                markerfacecolor="white",
                label=f"{readable(label)} (paper)",
                clip_on=False,
            )
    ax.set_xscale("symlog", linthresh=0.01)
    if 0 < len(lams) <= 8:  # label the λ that were run, where they are few enough to read
        ax.set_xticks(list(lams), [f"{lam:g}" for lam in lams])
        ax.minorticks_off()
    ax.set_xlabel("λ")
    percent_axis(ax)
    if title:
        ax.set_title(title)
    style_axes(ax)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=SMALL_FONT_SIZE)


def accuracy_vs_lambda_figure(
    lams: Sequence[float],
    panels: Mapping[str, tuple[Mapping[str, Sequence[float | None]], Mapping[str, Sequence[float | None]] | None]],
) -> Figure:
    """One :func:`plot_accuracy_vs_lambda` panel per entry of ``panels`` (title -> (our series,
    the paper's)), sharing their accuracy axis and one legend below them. A panel with none of our
    points says so in its title."""
    with book_style():
        fig, axes = plt.subplots(
            1, len(panels), figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), squeeze=False, sharey=True, layout="constrained"
        )
        order = []
        for i, (ax, (title, (ours, theirs))) in enumerate(zip(axes[0], panels.items())):
            empty = not any(v is not None for values in ours.values() for v in values)
            plot_accuracy_vs_lambda(
                ax, lams, ours, paper=theirs, title=f"{title} (no run yet)" if empty else title, legend=False
            )
            order += [label for name in ours for label in (name, f"{name} (paper)")]
            if i:
                ax.set_ylabel("")
        metrics = len(dict.fromkeys(label.removesuffix(" (paper)") for label in order))
        legend_outside(fig, where="below", order=tuple(dict.fromkeys(order)), ncols=max(1, metrics))
    return fig


def accuracy_vs_radius(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    *,
    columns: int = 2,
    xlabel: str = "radius / standard radius",
    empty: str = "no evaluated run yet",
) -> Figure:
    """Robust accuracy (%) against the attack's radius: one panel per entry of ``panels`` (title ->
    {series label -> (radii, accuracies as fractions)}), ``columns`` panels to a row, one style per
    series across all panels."""
    series = list(dict.fromkeys(readable(label) for curves in panels.values() for label in curves))
    columns = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    with book_style():
        fig, axes = plt.subplots(
            rows,
            columns,
            figsize=(TEXT_WIDTH, 0.45 * TEXT_WIDTH * rows),
            squeeze=False,
            sharex=True,
            sharey=True,
            layout="constrained",
        )
        for i, (ax, (title, curves)) in enumerate(zip(axes.flat, panels.items())):
            for label, (radii, accuracies) in curves.items():
                style = line_style(series.index(label))
                ax.plot(radii, [100 * a for a in accuracies], **style, label=label, clip_on=False)
            ax.set_xscale("symlog", linthresh=0.25)
            if i + columns >= len(panels):  # the lowest panel of its column, with the shared axis's ticks
                ax.set_xlabel(xlabel)
                ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_title(title)
            percent_axis(ax, label="robust accuracy (%)" if i % columns == 0 else "")
            if not curves:
                no_data(ax, empty)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        legend_outside(fig, where="below", order=tuple(series))
    return fig


def alignment_scatter(
    groups: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str = "gradient alignment with the reference",
    ylabel: str = "PGD-20 ℓ2 accuracy (%)",
    empty: str = "no evaluated run yet",
) -> Figure:
    """One point per run, (alignment, accuracy as a fraction), one marker and colour per group
    (group label -> points); the accuracy axis in percent, the legend below."""
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), layout="constrained")
        for i, (label, points) in enumerate(groups.items()):
            style = line_style(i)
            alignment, accuracy = zip(*points) if points else ((), ())
            ax.scatter(
                alignment,
                [100 * a for a in accuracy],
                color=style["color"],
                marker=style["marker"],
                s=36,
                label=readable(label),
                clip_on=False,
                zorder=3,
            )
        ax.set_xlabel(xlabel)
        percent_axis(ax, label=ylabel)
        if not groups:
            no_data(ax, empty)
        legend_outside(fig, where="below")
    return fig


def seed_spread_figure(
    groups: Mapping[str, Sequence[Mapping[str, float]]],
    paper: Mapping[str, Any] | None = None,
    *,
    empty: str = "no complete run yet",
) -> Figure:
    """Accuracy (%) of every seed and their mean ± sample standard deviation, per metric (clean,
    ℓ∞, ℓ2) and per group of runs (label -> one metrics dict per seed), beside the paper's mean ±
    standard deviation (``{"mean": {...}, "std": {...}, "seeds": n}``) when given."""
    shown = {readable(label): seeds for label, seeds in groups.items() if seeds}
    series = (["paper"] if paper else []) + list(shown)
    width = 0.8 / max(1, len(series))
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), layout="constrained")
        for i, name in enumerate(series):
            style = line_style(i)
            offsets = np.arange(len(METRIC_COLUMNS)) + (i - (len(series) - 1) / 2) * width
            if paper and i == 0:
                mean = [paper["mean"][key] for key, _ in METRIC_COLUMNS]
                std = [paper["std"][key] for key, _ in METRIC_COLUMNS]
                mark = f"{name}: mean ± std over {paper['seeds']} seeds"
            else:
                seeds = shown[name]
                values = [[m[key] for m in seeds] for key, _ in METRIC_COLUMNS]
                mean = [statistics.fmean(v) for v in values]
                std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
                mark = f"{name}: mean ± std over {len(seeds)} seeds"
                for offset, v in zip(offsets, values):
                    ax.scatter(
                        [offset + width / 4] * len(v),
                        [100 * a for a in v],
                        edgecolors=style["color"],
                        marker=MARKERS[i % len(MARKERS)],
                        facecolors="white",
                        s=28,
                        label=f"{name}: one seed",
                        zorder=3,
                    )
            ax.errorbar(
                offsets,
                [100 * m for m in mean],
                yerr=[100 * s for s in std],
                color=style["color"],
                marker=style["marker"],
                linestyle="none",
                capsize=4,
                label=mark,
                zorder=4,
            )
        ax.set_xticks(range(len(METRIC_COLUMNS)), [name for _, name in METRIC_COLUMNS])
        ax.set_xlim(-0.5, len(METRIC_COLUMNS) - 0.5)
        ax.grid(False, axis="x")
        percent_axis(ax)
        if not shown:
            no_data(ax, empty)
        # Each group's mean first, then its single seeds.
        order = sorted(ax.get_legend_handles_labels()[1], key=lambda label: label.endswith("one seed"))
        legend_outside(fig, where="below", order=tuple(order))
    return fig


def lift_apart(fig: Figure, names: Sequence[Any], gap: float = 2.0) -> None:
    """Raise each annotation of ``names`` (text offset in points, in order along x) by a line at a
    time until it clears those before it by ``gap`` pixels: close points keep readable names."""
    fig.canvas.draw()  # lays the figure out, which fixes where each name is drawn
    renderer = fig.canvas.get_renderer()
    placed = []
    for name in names:
        while any(name.get_window_extent(renderer).padded(gap).overlaps(box) for box in placed):
            x, y = name.xyann
            name.xyann = (x, y + 1.2 * name.get_fontsize())
        placed.append(name.get_window_extent(renderer))


def accuracy_vs_k_figure(
    accuracies: Mapping[int, Mapping[str, float]],
    seconds: Mapping[int, float | None],
    *,
    preset_k: int | None = None,
    ks: Sequence[int] = (),
    empty: str = "no real run yet",
) -> Figure:
    """The k study: accuracy (%) per metric against k (left, log axis) and against the median
    seconds of a training epoch (right, each point named by its k), sharing the accuracy axis.

    ``accuracies`` maps k to a metrics dict (fractions, keys of ``METRIC_COLUMNS``), ``seconds``
    k to its epoch time (a k without one is left out of the right panel). ``ks`` are the values
    of k the study asks for, labelled on the axis even before they have runs; ``preset_k`` marks
    the scale's own k with a vertical line.
    """
    done = sorted(accuracies)
    with book_style():
        fig, (by_k, by_cost) = plt.subplots(
            1, 2, figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), sharey=True, layout="constrained"
        )
        timed = [k for k in done if seconds.get(k) is not None]
        for i, (key, name) in enumerate(METRIC_COLUMNS):
            style = line_style(i)
            if done:
                by_k.plot(done, [100 * accuracies[k][key] for k in done], **style, label=name, clip_on=False)
            if timed:
                by_cost.plot(
                    [seconds[k] for k in timed], [100 * accuracies[k][key] for k in timed], **style, clip_on=False
                )
        # The top line carries the k of each point, so that the price of each k can be read off.
        names = [
            by_cost.annotate(
                f"k = {k}",
                (seconds[k], max(100 * accuracies[k][key] for key, _ in METRIC_COLUMNS)),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=SMALL_FONT_SIZE,
            )
            for k in sorted(timed, key=seconds.__getitem__)
        ]
        lift_apart(fig, names)
        if preset_k is not None:
            by_k.axvline(preset_k, color=COLORS[7], linestyle=":", linewidth=1.2, label=f"the scale's k ({preset_k})")
        ticks = sorted({*ks, *done})
        by_k.set_xscale("log")
        if ticks:
            by_k.set_xticks(ticks, [str(k) for k in ticks])
            by_k.minorticks_off()
            by_k.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.3)
        by_k.set_xlabel("k, target classes per image and step")
        by_cost.set_xlabel("seconds per training epoch")
        if timed:
            low, high = min(seconds[k] for k in timed), max(seconds[k] for k in timed)
            pad = 0.1 * (high - low or high or 1.0)
            by_cost.set_xlim(low - pad, high + pad)
        percent_axis(by_k)
        by_cost.set_ylim(0, 100)
        if not done:
            no_data(by_k, empty)
        legend_outside(fig, where="below")
    return fig
