"""A lambda slider that works in the built book, where no kernel runs widget callbacks.

Every position of the slider is a picture drawn in advance from a real :func:`lambda_grid`
run; a few lines of JavaScript show the picture of the chosen position. The HTML is
self-contained (pictures as PNG data URIs, no fonts or scripts fetched), so it works offline
and in any notebook front end that runs the scripts of HTML outputs. Without JavaScript the
first picture is shown.

* :func:`gradient_field`: the direction a model's input-gradient gives towards the other
  class, on a grid of points.
* :func:`toy_lambda_frame`: one position's figure: decision regions with that gradient field,
  and clean and PGD accuracy over the whole grid with the current lambda marked.
* :func:`slider_html`: any list of PNG pictures behind a range input.
* :func:`toy_lambda_slider` and :func:`lambda_grid_sentence`: the HTML and one sentence of
  what changes with lambda, for the toy chapter.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image
from torch import Tensor, nn

from pagcore.book.figures import plot_decision_boundary
from pagcore.book.style import TEXT_WIDTH, book_style, line_style
from pagcore.book.text import percent
from pagcore.evaluate.pag_score import log_probability_gradients
from pagcore.toy.experiment import ToyLambdaGrid
from pagcore.toy.problem import NUM_CLASSES

# The toy's plotting window (that of plot_decision_boundary): x1 in [-65, 65], x2 in [-130, 130].
EXTENT = (-65.0, 65.0, -130.0, 130.0)

# The frames are full-column figures of the book's style (pagcore.book.style): shown at their own
# size, their lettering reads at the style's point sizes.
FRAME_SIZE = (TEXT_WIDTH, 0.52 * TEXT_WIDTH)
# The pictures are flat colours, lines and text: a palette of this many colours looks the same
# and makes each PNG about a quarter of its full-colour size.
FRAME_COLORS = 128
ARROW_COLOR = "#222222"


def gradient_field(
    model: nn.Module, extent: tuple[float, float, float, float] = EXTENT, points: int = 13
) -> tuple[Tensor, Tensor]:
    """Grid points ``(points**2, 2)`` and, at each, d log p(c | x) / dx for c the class the model
    does not predict there: the way the model says the other class lies, which PGD follows.

    This is the gradient the toy's PAG score compares with the data line
    (:func:`pagcore.toy.experiment.manifold_alignment`)."""
    x0, x1, y0, y1 = extent
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, points), torch.linspace(y0, y1, points), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    with torch.no_grad():
        other = 1 - model(grid).argmax(dim=1)  # two classes
    every = log_probability_gradients(model, grid, torch.arange(NUM_CLASSES))
    return grid, every[torch.arange(len(grid)), other]


def draw_gradient_field(ax, grid: Tensor, gradients: Tensor, extent=EXTENT, length: float = 0.045) -> None:
    """Arrows of one length (``length`` in fractions of the axes) in the gradients' directions as
    the axes show them, so that an arrow along the data runs along the drawn line; a zero gradient
    (a dead ReLU region) draws nothing."""
    x0, x1, y0, y1 = extent
    span = np.array([x1 - x0, y1 - y0])
    on_screen = gradients.numpy() / span  # axes fractions: the aspect of the window no longer matters
    norms = np.linalg.norm(on_screen, axis=1, keepdims=True)
    unit = np.divide(on_screen, norms, out=np.zeros_like(on_screen), where=norms > 0)
    arrows = unit * length * span
    points = grid.numpy()
    ax.quiver(
        points[:, 0],
        points[:, 1],
        arrows[:, 0],
        arrows[:, 1],
        angles="xy",
        scale_units="xy",
        scale=1,
        pivot="mid",
        width=0.004,
        color=ARROW_COLOR,
        zorder=4,
    )


def toy_lambda_frame(grid: ToyLambdaGrid, index: int) -> Figure:
    """The figure of ``grid.lams[index]``: its model's decision regions, test points and gradient
    field (left); clean and PGD accuracy against lambda for the whole grid, this lambda marked (right)."""
    lam, metrics = grid.lams[index], grid.metrics[index]
    x_test, y_test = grid.test
    with book_style():
        fig = plt.figure(figsize=FRAME_SIZE, layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=(1.1, 1))
        model = grid.models[index]
        plot_decision_boundary(left, model, x_test, y_test, extent=EXTENT, resolution=200)
        draw_gradient_field(left, *gradient_field(model))
        left.set_title("decision regions and input-gradients")

        xs = np.arange(len(grid.lams))  # evenly spaced, as on the slider
        for i, (metric, label) in enumerate((("clean", "clean accuracy"), ("pgd", "PGD accuracy"))):
            values = 100 * np.array(grid.series(metric))
            line = line_style(i)
            right.plot(xs, values, **line, markersize=4, alpha=0.5)
            right.plot(
                xs[index],
                values[index],
                color=line["color"],
                marker=line["marker"],
                markersize=9,
                linestyle="",
                label=label,
            )
        right.axvline(index, color="0.4", linewidth=1, linestyle=":")
        right.set_xticks(xs, [f"{lam:g}" for lam in grid.lams])
        right.set(xlabel="λ", ylabel="accuracy on the test set (%)", ylim=(-3, 103), title="accuracy against λ")

        arrow = Line2D([], [], color=ARROW_COLOR, marker=r"$\rightarrow$", markersize=14, linestyle="none")
        handles, labels = left.get_legend_handles_labels()
        more_handles, more_labels = right.get_legend_handles_labels()
        fig.legend(
            [*handles, arrow, *more_handles],
            [*labels, "gradient towards the other class", *more_labels],
            loc="outside lower center",
            ncols=3,
            frameon=False,
        )
        fig.suptitle(
            f"λ = {lam:g}{' (vanilla)' if lam == 0 else ''}: clean {percent(metrics['clean'])}, "
            f"PGD {percent(metrics['pgd'])}, PAG score {metrics['alignment']:.2f} (seed {grid.seed})"
        )
    return fig


def figure_png(fig: Figure, colors: int = FRAME_COLORS) -> bytes:
    """The figure as a palette PNG of ``colors`` colours, at its own size (no tight bounding box,
    so that frames of one figure size have one picture size)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    buffer.seek(0)
    picture = Image.open(buffer).convert("RGB")
    palette = picture.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def slider_html(frames: list[bytes], labels: list[str], *, name: str = "λ", description: str = "") -> str:
    """A range input over ``frames`` (PNG bytes), showing the frame and the label of its position.

    The element ids come from the frames' contents, so the same pictures give the same HTML and
    two sliders on one page do not collide."""
    if not frames or len(frames) != len(labels):
        raise ValueError(f"need one label per frame; got {len(frames)} frames and {len(labels)} labels")
    root = "pag-slider-" + hashlib.sha256(b"".join(frames)).hexdigest()[:12]
    last = len(frames) - 1
    width = max(map(frame_width, frames))
    ticks = "".join(f'<option value="{i}"></option>' for i in range(len(frames)))
    images = "".join(
        f'<img class="pag-slider-frame" data-index="{i}" alt="{html.escape(f"{description} {label}".strip())}" '
        f'style="display:{"block" if i == 0 else "none"};width:100%;max-width:{frame_width(frame)}px;height:auto" '
        f'src="data:image/png;base64,{base64.b64encode(frame).decode("ascii")}">'
        for i, (frame, label) in enumerate(zip(frames, labels))
    )
    return f"""<div class="pag-slider" id="{root}">
<div class="pag-slider-controls" style="display:flex;align-items:center;gap:0.75em;max-width:{width}px">
<label for="{root}-input">{html.escape(name)}</label>
<input id="{root}-input" type="range" min="0" max="{last}" step="1" value="0" list="{root}-ticks"
 style="flex:1" aria-valuetext="{html.escape(labels[0])}">
<datalist id="{root}-ticks">{ticks}</datalist>
<output for="{root}-input" style="min-width:7em">{html.escape(labels[0])}</output>
</div>
{images}
</div>
<script>
(function () {{
  var root = document.getElementById("{root}");
  var input = root.querySelector("input"), output = root.querySelector("output");
  var frames = root.querySelectorAll("img.pag-slider-frame");
  var labels = {json.dumps(labels)};
  function show() {{
    var i = Number(input.value);
    frames.forEach(function (img, j) {{ img.style.display = j === i ? "block" : "none"; }});
    output.textContent = labels[i];
    input.setAttribute("aria-valuetext", labels[i]);
  }}
  input.addEventListener("input", show);
  show();
}})();
</script>"""


def frame_width(png: bytes) -> int:
    """The pixel width in a PNG's header (bytes 16-19 of the IHDR chunk)."""
    return int.from_bytes(png[16:20], "big")


def toy_lambda_slider(grid: ToyLambdaGrid) -> str:
    """The slider of the toy chapter: one :func:`toy_lambda_frame` per lambda of ``grid``."""
    frames = []
    for index in range(len(grid.lams)):
        fig = toy_lambda_frame(grid, index)
        frames.append(figure_png(fig))
        plt.close(fig)
    labels = [f"λ = {lam:g}" for lam in grid.lams]
    return slider_html(frames, labels, description=f"Toy model of seed {grid.seed} trained with")


def lambda_grid_sentence(grid: ToyLambdaGrid) -> str:
    """What changes along the grid, in one sentence: PGD accuracy and PAG score at both ends, the
    best lambda for PGD accuracy, and the range of clean accuracy."""
    pgd, alignment, clean = grid.series("pgd"), grid.series("alignment"), grid.series("clean")
    best = max(range(len(pgd)), key=pgd.__getitem__)
    low, high = min(clean), max(clean)
    clean_text = (
        f"stays at {percent(low)}"
        if percent(low) == percent(high)
        else f"ranges from {percent(low)} to {percent(high)}"
    )
    return (
        f"As λ grows from {grid.lams[0]:g} to {grid.lams[-1]:g}, the PGD accuracy of the seed-{grid.seed} model "
        f"goes from {percent(pgd[0])} to {percent(pgd[-1])} (highest, {percent(pgd[best])}, at "
        f"λ = {grid.lams[best]:g}) and its PAG score from {alignment[0]:.2f} to {alignment[-1]:.2f}, "
        f"while its clean accuracy {clean_text}."
    )
