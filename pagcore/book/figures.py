"""Figures of the book: decision boundaries (Fig. 3), PAG image grids (Figs. 1, 4), curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.evaluate.final import load_pag_grid

CLASS_COLORS = ("#3b6fb6", "#d1603d")


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
    shows whether the attack found the other class off the data line.
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
    for label, color in enumerate(CLASS_COLORS):
        pts = x[y == label].numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=color, label=f"class {label}", zorder=3)
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
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)


def image_grid(images: np.ndarray | Tensor, *, row_labels=(), column_labels=(), scale: float = 1.0):
    """Draw a (rows, cols, C, H, W) array of [0, 1] images as one figure; returns the figure."""
    images = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * scale, rows * scale), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(np.clip(images[r, c].transpose(1, 2, 0), 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c < len(column_labels):
                ax.set_title(column_labels[c], fontsize=8)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


def plot_accuracy_vs_lambda(
    ax: Axes,
    lams,
    series: dict[str, list[float | None]],
    *,
    paper: dict[str, list[float | None]] | None = None,
    title: str = "",
) -> None:
    """Accuracy (%) against lambda on a symmetric-log axis; dashed lines for the paper's values.
    A ``None`` (a run not made, a lambda the paper did not report) leaves its point out."""
    for i, (label, values) in enumerate(series.items()):
        points = [(lam, 100 * v) for lam, v in zip(lams, values) if v is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color=f"C{i}", label=label)
        theirs = [(lam, 100 * v) for lam, v in zip(lams, (paper or {}).get(label, [])) if v is not None]
        if theirs:
            ax.plot(
                *zip(*theirs),
                linestyle="--",
                marker="x",
                color=f"C{i}",
                alpha=0.6,
                label=f"{label} (paper)",
            )
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("λ")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)


def training_curves(runs: dict[str, Any], labels: dict[str, str]):
    """Test accuracy and training loss per epoch of every stored run; None if there are none."""
    available = {row: run for row, run in runs.items() if run is not None and run.history}
    if not available:
        return None
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for row, run in available.items():
        epochs = [h["epoch"] for h in run.history]
        ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in run.history], label=labels.get(row, row))
        ax_loss.plot(epochs, [h["loss"] for h in run.history], label=labels.get(row, row))
    ax_acc.set(xlabel="epoch", ylabel="clean test accuracy (%)")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Eq. 1)", yscale="log")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pag_grid_figure(runs: dict[str, Any], labels: dict[str, str], class_names: Sequence[str], image: int = 0):
    """For one test image, the large-eps targeted PGD towards every class, one row per run."""
    grids = {}
    for row, run in runs.items():
        grid = load_pag_grid(run.artifacts) if run is not None else None
        if grid is not None:
            grids[row] = grid
    if not grids:
        return None
    stacked = torch.stack([g[min(image, len(g) - 1)] for g in grids.values()])
    return image_grid(
        stacked, row_labels=[labels.get(r, r) for r in grids], column_labels=("input", *class_names), scale=1.2
    )
