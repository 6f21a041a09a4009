"""The book's one figure style: sizes, fonts and line styles shared by every figure.

A page of the built book, 1280 pixels wide, has a text column in which a figure is shown at most
:data:`COLUMN_PIXELS` wide. A notebook stores a figure as a PNG cropped to what it draws plus a
margin of 0.1 inch on each side (``bbox_inches="tight"``); a figure :data:`TEXT_WIDTH` inches wide
at :data:`DPI` dots per inch, margins included, is no wider than the column. It is then shown at
its own size, and a font of 9 points reads as 9 points; a wider figure would be shrunk, and its
lettering with it. Lines differ in colour (the Okabe-Ito palette, which colour-blind readers can
tell apart), in marker and in dash pattern, so that they can still be told apart on a grey-scale
print.

* :func:`book_style` applies the style inside a ``with`` block (what :mod:`pagcore.book.figures`
  does for every figure it makes); :func:`apply` applies it for the rest of a session, for a
  notebook that draws figures of its own.
* :func:`style_axes` enforces the font sizes on axes a caller made outside the style.
* :func:`line_style` is the ``i``-th of the distinct line styles, for series drawn by hand.
* :func:`legend_outside` puts a figure's legend below or to the right of its axes, never over them.
* :func:`text_width` measures a text as the renderer draws it, to lay out labels that must fit.
* :func:`photograph` stores a figure made of pictures as a JPEG, cropped like a notebook's PNG.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib as mpl
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend

COLUMN_PIXELS = 672
"""The widest a figure is shown in the text column of a 1280-pixel-wide page of the book."""

DPI = 96
"""Dots per inch of the book's figures: the column is 7 inches wide at this resolution."""

EXPORT_MARGIN = 0.1
"""The margin, in inches, that a notebook's PNG of a figure adds on each side of what it draws."""

TEXT_WIDTH = COLUMN_PIXELS / DPI - 2 * EXPORT_MARGIN
"""Width of a full-column figure, in inches (6.8)."""

FONT_SIZE = 10.0
"""Axis labels and titles, in points."""

SMALL_FONT_SIZE = 9.0
"""Tick labels, legends and row labels: the smallest lettering of any figure, in points."""

# Okabe & Ito (2008), with grey in place of its yellow, which is too faint for lines on white.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", "h")
LINESTYLES = ("-", "--", ":", "-.")
N_STYLES = len(COLORS) * len(LINESTYLES)


def line_style(i: int) -> dict[str, str]:
    """The ``i``-th line style of the book: colour, marker and dash pattern.

    The first eight differ in all three. Each later one repeats a colour, but the dash pattern
    moves on by one with every round of the colours, so that no two of the first :data:`N_STYLES`
    share both colour and dash pattern, and their markers differ too.
    """
    return {
        "color": COLORS[i % len(COLORS)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i + i // len(COLORS)) % len(LINESTYLES)],
    }


RC: dict[str, Any] = {
    "figure.figsize": (TEXT_WIDTH, 0.5 * TEXT_WIDTH),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": SMALL_FONT_SIZE,
    "ytick.labelsize": SMALL_FONT_SIZE,
    "legend.fontsize": SMALL_FONT_SIZE,
    "legend.title_fontsize": SMALL_FONT_SIZE,
    "figure.titlesize": FONT_SIZE,
    "figure.labelsize": FONT_SIZE,
    "legend.frameon": False,
    "legend.columnspacing": 1.5,
    "axes.prop_cycle": cycler(**{key: [line_style(i)[key] for i in range(N_STYLES)] for key in line_style(0)}),
    "lines.linewidth": 1.5,
    "lines.markersize": 5.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
"""The rcParams of the book's figures."""


@contextmanager
def book_style() -> Iterator[None]:
    """Figures made inside this block take the book's style."""
    with mpl.rc_context(RC):
        yield


def style_axes(ax: Axes) -> None:
    """Give ``ax`` the book's font sizes, whatever the rcParams were when it was made."""
    ax.tick_params(labelsize=SMALL_FONT_SIZE)
    ax.xaxis.label.set_fontsize(FONT_SIZE)
    ax.yaxis.label.set_fontsize(FONT_SIZE)
    ax.title.set_fontsize(FONT_SIZE)


def text_width(text: str, size: float = SMALL_FONT_SIZE) -> float:
    """Width in inches of the widest line of ``text`` at ``size`` points, as the Agg renderer draws it."""
    figure = Figure(dpi=DPI)
    renderer = FigureCanvasAgg(figure).get_renderer()
    return figure.text(0, 0, text, fontsize=size).get_window_extent(renderer).width / DPI


def legend_outside(
    fig: Figure,
    *,
    where: str = "below",
    ncols: int | None = None,
    order: tuple[str, ...] = (),
    **kwargs: Any,
) -> Legend | None:
    """One legend for all of ``fig``'s axes, outside them: ``where`` is "below" or "right".

    The figure must use the constrained layout, which makes room for the legend by shrinking the
    axes instead of letting the legend cover them. Entries with the same label appear once, those
    named in ``order`` first and in that order. Below the axes, as many columns as fit the width.
    """
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:
        return None
    rank = {label: i for i, label in enumerate(order)}
    labels = sorted(entries, key=lambda label: rank.get(label, len(rank)))
    if where == "below":
        # An entry is its label, its line sample and the gaps beside them (rcParams, in font sizes).
        sample = sum(mpl.rcParams[f"legend.{key}"] for key in ("handlelength", "handletextpad", "columnspacing"))
        widest = max(text_width(label) for label in labels) + sample * SMALL_FONT_SIZE / 72
        loc = "outside lower center"
        ncols = ncols or max(1, min(len(labels), int(fig.get_figwidth() // widest)))
    elif where == "right":
        loc, ncols = "outside right upper", ncols or 1
    else:
        raise ValueError(f"where must be 'below' or 'right', not {where!r}")
    if where == "below":
        _make_room_below(fig, rows=-(-len(labels) // ncols))
    return fig.legend([entries[label] for label in labels], labels, loc=loc, ncols=ncols, **kwargs)


LEGEND_SHARE = 0.4
"""The largest share of a figure's height a legend below its axes may take from them."""


def _make_room_below(fig: Figure, rows: int) -> None:
    """Add the height of a legend of ``rows`` rows below the axes to ``fig`` when it would take more
    than :data:`LEGEND_SHARE` of the figure: the constrained layout would otherwise squeeze the axes
    to nothing and draw the legend over them."""
    line = SMALL_FONT_SIZE / 72 * (1 + mpl.rcParams["legend.labelspacing"])
    legend = rows * line + 2 * mpl.rcParams["legend.borderpad"] * SMALL_FONT_SIZE / 72
    if legend > LEGEND_SHARE * fig.get_figheight():
        fig.set_figheight(fig.get_figheight() + legend)


PHOTO_QUALITY = 90
"""JPEG quality of :func:`photograph`: at 90 an attacked image on screen looks as it does in PNG."""


def photograph(fig: Figure) -> Any:
    """``fig`` as a JPEG image to display or glue, cropped and margined like a notebook's PNG.

    Grids of attacked images are noise down to the pixel, which PNG stores at several times the
    bytes of a JPEG of the same look; executed notebooks travel with the repository, so their
    pictures are JPEGs. Figures of lines and text stay PNG, which keeps their edges sharp."""
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="jpeg",
        dpi=DPI,
        bbox_inches="tight",
        pad_inches=EXPORT_MARGIN,
        pil_kwargs={"quality": PHOTO_QUALITY},
    )
    return Image(data=buffer.getvalue(), format="jpeg")
