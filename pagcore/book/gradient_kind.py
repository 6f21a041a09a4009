"""Which input-gradient the PAG loss aligns: the logit's (Eq. (1) of the paper) or the log-softmax's
(the authors' released code, with score-based targets), read from short runs that differ only in it.

Each source is trained for :data:`pagcore.orchestrate.book_runs.GRADIENT_KIND_EPOCHS` epochs with
each kind, all else equal. A kind *trains* on a source when the run fits its labels by the rule of
evidence (:func:`pagcore.book.evidence.fits_labels`); two kinds differ on a source when their clean
accuracies are further apart than the measured seed spread allows. The posterior gap of each
source's targets (:mod:`pagcore.evaluate.posterior_gap`) is the proposed explanation: log-softmax
gradients cannot align with targets whose gap is large, logit gradients can. The explanation
predicts that the log-softmax kind falls behind the logit on a source with a large gap and not on
one with a small gap; :func:`explanation_reading` says whether the runs agree, and
:func:`stall_reading`, separately, whether a log-softmax run that does not learn its labels at all
goes with the larger gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pagcore.book.evidence import FIT_FACTOR, Noise, chance, compare, fits_labels
from pagcore.book.figures import no_data, percent_axis
from pagcore.book.style import COLORS, LINESTYLES, TEXT_WIDTH, book_style, legend_outside
from pagcore.book.text import listed, markdown_table, percent, placeholder_table, shown_points, signed_points
from pagcore.config import GRADIENTS, MODEL_FREE_SOURCES
from pagcore.orchestrate.book_runs import GRADIENT_KIND_EPOCHS
from pagcore.orchestrate.experiments import ROW_LABELS
from pagcore.store.runs import Run

KIND_WORDS = {"logit": "logit", "log_softmax": "log-softmax"}
"""How the book names each gradient kind."""
assert tuple(KIND_WORDS) == GRADIENTS

SOURCES = ("class_mean", "score")
"""The sources compared: the paper's main model-free source and the later version's score-based one."""

SOURCES_IN_ORDER = (*MODEL_FREE_SOURCES, "score")
"""The order in which the posterior-gap table lists the sources: the paper's, then the later version's."""

Key = tuple[str, str]
"""(source, gradient kind)."""


def label(source: str, gradient: str) -> str:
    return f"{ROW_LABELS[source]}, {KIND_WORDS[gradient]}"


def compared_points(
    score_overrides: Mapping[str, Any] | None, epochs: int = GRADIENT_KIND_EPOCHS
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The runs compared, as (row, overrides) by label: class mean with each kind and, given the
    score-based row's overrides (its denoiser and σ), the score-based row with each kind."""
    result = {}
    for source in SOURCES:
        if source == "score" and score_overrides is None:
            continue
        base = dict(score_overrides or {}) if source == "score" else {}
        for gradient in GRADIENTS:
            result[label(source, gradient)] = (source, {**base, "gradient": gradient, "epochs": epochs})
    return result


def comparison(runs: Mapping[str, Run | None], epochs: int = GRADIENT_KIND_EPOCHS) -> dict[Key, Run | None]:
    """The compared runs by (source, kind): only complete runs of exactly ``epochs`` epochs count,
    since a longer run of the same row would otherwise stand in for a missing short one."""
    result: dict[Key, Run | None] = {}
    for source in SOURCES:
        for gradient in GRADIENTS:
            run = runs.get(label(source, gradient))
            usable = run is not None and run.metrics is not None and run.params.get("epochs") == epochs
            result[(source, gradient)] = run if usable else None
    return result


def _last(run: Run, key: str) -> float | None:
    return run.history[-1].get(key) if run.history else None


def runs_table(runs: Mapping[Key, Run | None]) -> str:
    """Markdown: per source and kind, the last epoch's training accuracy and cross-entropy, and the
    clean and PGD-20 accuracy on the whole test set ('not run' where missing)."""
    header = ("targets", "gradient", "train accuracy", "train cross-entropy", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2")
    rows = []
    for (source, gradient), run in runs.items():
        if run is None:
            rows.append((ROW_LABELS[source], KIND_WORDS[gradient], "not run", "", "", "", ""))
            continue
        entropy = _last(run, "cross_entropy")
        metrics = run.metrics
        rows.append(
            (
                ROW_LABELS[source],
                KIND_WORDS[gradient],
                percent(_last(run, "train_accuracy")),
                "" if entropy is None else f"{entropy:.2f}",
                *(percent(metrics.get(key)) for key in ("clean", "linf", "l2")),
            )
        )
    return markdown_table(header, rows)


def curves_figure(runs: Mapping[Key, Run | None], num_classes: int) -> Figure:
    """Training accuracy (%) per epoch: one colour per source, solid for the logit kind and dashed
    for the log-softmax kind, with chance as a grey line."""
    drawn = any(run is not None and run.history for run in runs.values())
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, (0.45 if drawn else 0.2) * TEXT_WIDTH), layout="constrained")
        if not drawn:
            ax.set_axis_off()
            no_data(ax, "no run of this comparison yet")
            return fig
        for (source, gradient), run in runs.items():
            if run is None or not run.history:
                continue
            epochs = [h["epoch"] for h in run.history]
            ax.plot(
                epochs,
                [100 * h["train_accuracy"] for h in run.history],
                color=COLORS[SOURCES.index(source)],
                linestyle=LINESTYLES[GRADIENTS.index(gradient)],
                marker="os"[GRADIENTS.index(gradient)],
                label=label(source, gradient),
            )
        ax.axhline(100 * chance(num_classes), color=COLORS[-1], linestyle=":", label="chance")
        percent_axis(ax, label="training accuracy (%)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        legend_outside(fig, where="below")
    return fig


def gap_table(record: Mapping[str, Any] | None) -> str:
    """Markdown: per source, the posterior gap of its targets (median and 10th to 90th percentile) and
    the cap it puts on a log-posterior family's weighted mean cosine at the median gap."""
    header = ("targets", "posterior gap, median", "10th–90th percentile", "cosine cap at the median")
    if record is None:
        return placeholder_table(header, "the posterior gap has not been measured yet")
    measured = record["gaps"]
    rows = [
        (
            ROW_LABELS[source],
            f"{measured[source]['q50']:.2f}",
            f"{measured[source]['q10']:.2f}–{measured[source]['q90']:.2f}",
            f"{measured[source]['median_cosine_cap']:.2f}",
        )
        for source in SOURCES_IN_ORDER
        if source in measured
    ]
    return markdown_table(header, rows)


def _clean(run: Run) -> float:
    return run.metrics["clean"]


def source_reading(
    source: str,
    runs: Mapping[Key, Run | None],
    noise: Noise | None,
    num_classes: int,
    epochs: int = GRADIENT_KIND_EPOCHS,
    scale: str = "cpu",
) -> tuple[int | None, str]:
    """Whether the log-softmax kind falls behind the logit kind on ``source`` (-1 behind, 0 not told
    apart, +1 ahead, None not judged) and the sentence that says so."""
    logit, soft = runs[(source, "logit")], runs[(source, "log_softmax")]
    name = ROW_LABELS[source]
    missing = [KIND_WORDS[g] for g, run in (("logit", logit), ("log_softmax", soft)) if run is None]
    if missing:
        return (
            None,
            f"With {name} targets, the {listed(missing)} "
            f"run{'s have' if len(missing) > 1 else ' has'} not been made yet.",
        )

    def fit(run: Run) -> str:
        fits = fits_labels(_clean(run), num_classes)
        return f"{percent(_clean(run))} clean ({'above' if fits else 'not above'} {FIT_FACTOR:g} × chance)"

    head = (
        f"With {name} targets, after {epochs} epochs at the {scale} scale the logit kind reaches {fit(logit)}; "
        f"the log-softmax kind reaches {fit(soft)}"
    )
    if noise is None:
        return None, head + "; without a measured seed spread the two are not compared."
    order = compare(noise, "clean", soft.metrics, logit.metrics)
    words = {
        -1: "the log-softmax kind falls behind by more than the seed spread allows",
        0: "the two cannot be told apart from the seed spread",
        1: "the log-softmax kind is ahead by more than the seed spread allows",
    }[order]
    return (
        order,
        f"{head}: a difference of {signed_points(shown_points(_clean(soft), _clean(logit)))} points, so {words}.",
    )


def curves_reading(runs: Mapping[Key, Run | None], num_classes: int) -> str:
    """What the curves show: per run, where its training accuracy started and ended against chance."""
    drawn = {key: run for key, run in runs.items() if run is not None and run.history}
    if not drawn:
        return "No run of this comparison has been made yet, so the figure is empty."
    level = chance(num_classes)
    parts = []
    for (source, gradient), run in drawn.items():
        first, last = run.history[0]["train_accuracy"], run.history[-1]["train_accuracy"]
        below = not fits_labels(last, num_classes)
        parts.append(
            f"{label(source, gradient)} goes from {percent(first)} to {percent(last)}"
            + (", under twice chance" if below else "")
        )
    return f"Training accuracy over the epochs (chance is {percent(level)}): {'; '.join(parts)}."


ORDER_WORDS = {
    -1: "falls behind the logit's model",
    0: "cannot be told apart from the logit's model",
    1: "is ahead of the logit's model",
}


def finding_line(orders: Mapping[str, int | None], epochs: int, scale: str) -> str:
    """One sentence for the chapter's finding: how the clean accuracy of the log-softmax gradient's
    model compares with the logit's on each source whose two runs exist, sources alike named once."""
    judged = {s: o for s, o in orders.items() if o is not None}
    if not judged:
        return "The comparison of the logit and log-softmax input-gradients waits for its runs."
    by_order: dict[int, list[str]] = {}
    for source, order in judged.items():
        by_order.setdefault(order, []).append(ROW_LABELS[source])
    parts = [f"{ORDER_WORDS[order]} on {listed(names)} targets" for order, names in sorted(by_order.items())]
    waiting = [ROW_LABELS[s] for s in orders if s not in judged]
    tail = f"; the {listed(waiting)} runs are not made yet" if waiting else ""
    # The seed spread is measured on full-length runs: a short run's noise is not measured apart.
    return (
        f"After {epochs} epochs at the {scale} scale, the model trained on the log-softmax input-gradient instead "
        f"of the logit {listed(parts)} in clean accuracy (gaps judged against the seed spread of the "
        f"full-length runs){tail}."
    )


def explanation_reading(order: Mapping[str, int | None], record: Mapping[str, Any] | None) -> str:
    """Whether the runs agree with the posterior-gap explanation: the source with the larger median
    gap must show log-softmax behind logit, the one with the smaller gap must not."""
    if record is None:
        return "The posterior gap has not been measured, so the explanation is not tested yet."
    gaps = {s: record["gaps"][s]["q50"] for s in SOURCES if s in record["gaps"]}
    judged = {s: o for s, o in order.items() if o is not None and s in gaps}
    gap_words = listed([f"{ROW_LABELS[s]} {g:.2f}" for s, g in gaps.items()])
    if len(judged) < len(SOURCES):
        return (
            f"The median posterior gaps are {gap_words}. The explanation predicts that the log-softmax kind falls "
            f"behind the logit kind in clean test accuracy on the source with the larger gap and not on the other; "
            f"both sources' runs are needed to test it, so it is not tested yet."
        )
    wide, narrow = sorted(SOURCES, key=lambda s: -gaps[s])
    agrees = judged[wide] == -1 and judged[narrow] >= 0
    return (
        f"The median posterior gaps are {gap_words}. The explanation predicts that the log-softmax kind falls behind "
        f"the logit kind in clean test accuracy on {ROW_LABELS[wide]} targets, whose gap is larger, and not on "
        f"{ROW_LABELS[narrow]} targets. "
        + (
            "The runs agree: consistent with the explanation, on one seed per run and two sources, which is "
            "support, not proof."
            if agrees
            else "The runs do not agree, so the posterior gap does not explain the difference between the kinds."
        )
    )


def stall_reading(
    runs: Mapping[Key, Run | None], orders: Mapping[str, int | None], record: Mapping[str, Any] | None, num_classes: int
) -> str:
    """A second, weaker reading beside :func:`explanation_reading`, whose prediction stands as stated:
    whether a log-softmax run that does not fit its labels (under twice chance) goes with the source of
    larger gap, and how the log-softmax kind does on the other source (``orders``, from
    :func:`source_reading`)."""
    soft = {s: runs.get((s, "log_softmax")) for s in SOURCES}
    if record is None or any(run is None or not run.history for run in soft.values()):
        return ""
    gaps = {s: record["gaps"][s]["q50"] for s in SOURCES if s in record["gaps"]}
    if len(gaps) < len(SOURCES):
        return ""
    wide, narrow = sorted(SOURCES, key=lambda s: -gaps[s])
    last = {s: run.history[-1]["train_accuracy"] for s, run in soft.items()}
    fits = {s: fits_labels(last[s], num_classes) for s in SOURCES}

    def ended(source: str) -> str:
        return f"{ROW_LABELS[source]} targets at {percent(last[source])}, {'above' if fits[source] else 'under'}"

    head = (
        f"Separately, whether the log-softmax kind fits its labels at all: its runs end their training with "
        f"{ended(wide)} twice chance, and with {ended(narrow)} it. "
    )
    if fits[wide] or not fits[narrow]:
        return head + "So whether a log-softmax run fits its labels does not follow the gap."
    other = {
        -1: "fits them but still falls behind the logit kind, so the gap goes with the failure to fit, not with "
        "the whole difference between the kinds.",
        0: "fits them as well as the logit kind does, as the gap would have it.",
        1: "fits them better than the logit kind does, as the gap would have it.",
        None: "fits them; with the other source's runs not compared, nothing more is read.",
    }[orders.get(narrow)]
    return (
        head
        + f"So in these two single-seed runs it fails to fit only where the gap is larger, and on {ROW_LABELS[narrow]} "
        "targets it " + other
    )
