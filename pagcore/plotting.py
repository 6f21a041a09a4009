"""Figures of the book: decision boundaries (Fig. 3), PAG image grids (Figs. 1, 4), curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from torch import Tensor, nn

from .modes import eval_mode

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


PAG_GRID = "pag_grid.pt"


def save_pag_grid(folder: Path, grid: Tensor, test_index: Tensor, *, column_labels: Sequence[str]) -> None:
    """Store a PAG picture grid (:func:`pagcore.evaluation.pag_pictures`) as 8-bit pixels and a PNG.

    The pixels are what any display of the [0, 1] images shows, at half the bytes of float16: the
    grids travel with the repository, and with every command sent to a GPU machine. The PNG is for
    people browsing a run folder; git ignores it, since :func:`load_pag_grid` redraws it."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8)
    torch.save({"grid": pixels.cpu(), "test_index": test_index.cpu()}, folder / PAG_GRID)
    figure = image_grid(grid, column_labels=column_labels)
    figure.savefig(folder / "pag_grid.png", dpi=100)
    plt.close(figure)


def load_pag_grid(folder: Path) -> Tensor | None:
    """The stored grid of :func:`save_pag_grid` as float images in [0, 1]; None if there is none."""
    path = folder / PAG_GRID
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)["grid"].float() / 255
