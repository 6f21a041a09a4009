"""The score-based chapter's tables, figures and verdicts: the denoiser behind the score-based
targets (its quality, its class information, the targets it gives), and the later paper's "better
alignment, more robustness", read from every stored run's alignment with those targets.

The denoiser is the book's (:data:`pagcore.orchestrate.book_runs.SCORE_DENOISERS`), a run of
``python -m pagcore denoiser`` (its ``metrics.json`` holds the quality measured once it finished);
the alignment is each run's stored ``score_alignment`` evaluation (``python -m pagcore evaluate
--score-alignment``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from pagcore.book.evidence import (
    AlignmentSpread,
    aligned_above,
    alignment_claim,
    alignment_spread,
    configurations_words,
    sampling_std,
    seed_means,
    side,
)
from pagcore.book.figures import percent_axis, readable
from pagcore.book.style import SMALL_FONT_SIZE, TEXT_WIDTH, book_style, legend_outside, line_style
from pagcore.book.tables import training_devices
from pagcore.book.text import listed, markdown_table, percent, placeholder_table, verb
from pagcore.config import ObjectiveConfig
from pagcore.data import SPECS, as_float
from pagcore.evaluate.stored import chosen_evaluations
from pagcore.orchestrate.book_runs import SCORE_DENOISERS, score_overrides
from pagcore.orchestrate.experiments import ROW_LABELS, RealDataExperiment
from pagcore.orchestrate.queue import seed_row_runs
from pagcore.paper import reported
from pagcore.paper.denoiser import Denoiser
from pagcore.store.runs import Run, RunStore
from pagcore.train.denoiser import denoiser_store, newest_denoiser
from pagcore.train.score_targets import score_targets

ESTIMATES = {
    "noisy": "the noisy image",
    "gaussian": "optimal linear",
    "empirical": "optimal for the training set",
    "unconditional": "ours, no label",
    "conditional": "ours, true label",
}
"""The denoising estimates whose errors the quality table and figure show, in that order."""


def book_denoiser(store: RunStore, name: str = "", dataset: str = "cifar10") -> Run | None:
    """The denoiser run the chapter reads from ``store``: ``name`` (a run name or directory, which must
    exist), or the book's denoiser of ``dataset``; None while it is not trained (or the dataset has none)."""
    denoisers = denoiser_store(store.root)
    if name:
        run = denoisers.find(name)
    elif dataset in SCORE_DENOISERS:
        run = denoisers.run(SCORE_DENOISERS[dataset])
    else:
        return None
    return run if run.complete else None


def unset_parameters(dataset: str = "cifar10") -> dict[str, str]:
    """What the chapter's parameters left unset resolve to, in words, for its parameters table."""
    lam = reported.SCORE_LAMBDA.get(dataset)
    return {
        "denoiser": f"`{SCORE_DENOISERS[dataset]}` (the book's)" if dataset in SCORE_DENOISERS else "none yet",
        "score_sigma": f"{ObjectiveConfig.score_sigma:g}",
        "lam": "none published" if lam is None else f"{lam:g} (the authors' code)",
    }


def quality_table(metrics: Mapping[str, Any] | None) -> str:
    """Markdown: per noise level σ, the mean squared error per pixel (×10⁻³) of each estimate; one row
    saying so when no denoiser has been measured."""
    if metrics is None:
        return placeholder_table(("estimate", "error"), "no denoiser has been trained yet")
    errors = metrics["errors"]
    rows = [(name, *(f"{1000 * errors[sigma][key]:.2f}" for sigma in errors)) for key, name in ESTIMATES.items()]
    return markdown_table(("estimate", *(f"σ = {float(s):g}" for s in errors)), rows)


def quality_figure(metrics: Mapping[str, Any]) -> Figure:
    """Root-mean-squared error per pixel against σ, one line per estimate, on log axes."""
    errors = metrics["errors"]
    sigmas = [float(s) for s in errors]
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.5 * TEXT_WIDTH), layout="constrained")
        for i, (key, name) in enumerate(ESTIMATES.items()):
            style = line_style(i)
            ax.plot(sigmas, [math.sqrt(errors[s][key]) for s in errors], label=name, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("noise level σ (pixel units)")
        ax.set_ylabel("RMS error per pixel")
        legend_outside(fig, where="below")
    return fig


def class_information(metrics: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the denoiser's implicit classifier beats chance by the rule's margin, and the sentence
    that says so. Score-based targets carry class information only if it does."""
    accuracy = metrics["implicit_classifier"]["accuracy"]
    images, level = metrics["test_images"], metrics["chance"]
    beyond = side(accuracy - level, sampling_std(level, images)) > 0
    sentence = (
        f"The denoiser's implicit classifier, which gives a test image the label whose conditional denoiser "
        f"explains it best, is right on {percent(accuracy)} of {images} test images, against the "
        f"{percent(level)} of chance: "
        + (
            "the denoiser carries class information beyond chance, so its targets can carry it too."
            if beyond
            else "not beyond chance by twice its sampling error, so its targets are not shown to carry class "
            "information, and the score-based rows cannot be read as PAG rows."
        )
    )
    return beyond, sentence


def target_pictures(denoiser: Denoiser, images: Tensor, sigma: float, device: torch.device | str = "cpu") -> Tensor:
    """For each image, its score-based target towards every class, as pictures: ``(n, 1 + C, 3, H, W)``,
    the image first, then each unit target scaled to fill [0, 1] around mid-grey (the same scale for
    every class of an image, so their strengths compare)."""
    targets = score_targets(denoiser, images, range(len(images)), sigma, device=device)
    spread = targets.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
    pictures = 0.5 + 0.5 * targets / spread
    return torch.cat([as_float(images).unsqueeze(1).cpu(), pictures], dim=1)


def class_cosine(targets: Tensor) -> float:
    """The mean cosine between one image's targets towards two different classes, over the images of
    ``targets`` ``(n, C, *image)``: 1 if every class got the same direction, 0 if unrelated ones."""
    flat = torch.nn.functional.normalize(targets.flatten(2).double(), dim=2)
    gram = flat @ flat.transpose(1, 2)
    classes = gram.shape[1]
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return float((off_diagonal / (classes * (classes - 1))).mean())


def targets_reading(pictures: Tensor) -> str:
    """What :func:`target_pictures` show, measured on them: each picture is its unit target scaled
    around mid-grey by one positive factor per image, which leaves the cosines as they were."""
    cosine = class_cosine(pictures[:, 1:] - 0.5)
    return (
        f"Over these {len(pictures)} images, the targets of one image towards two different classes have a mean "
        f"cosine of {cosine:.2f} (1 would mean that every class gets the same direction, 0 unrelated directions)."
    )


def target_figure(pictures: Tensor, class_names: Sequence[str]) -> Figure:
    """One row per test image: the image, then its target towards each class (grey: no change)."""
    rows, columns = pictures.shape[:2]
    cell = TEXT_WIDTH / columns
    with book_style():
        fig, axes = plt.subplots(rows, columns, figsize=(TEXT_WIDTH, cell * rows + 0.35), squeeze=False)
        for r in range(rows):
            for c in range(columns):
                ax = axes[r][c]
                ax.imshow(np.clip(pictures[r, c].numpy().transpose(1, 2, 0), 0, 1), interpolation="nearest")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(("image", *class_names)[c], fontsize=SMALL_FONT_SIZE, rotation=45, loc="left")
        fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.35 / (cell * rows + 0.35), wspace=0.04, hspace=0.04)
    return fig


def _alignment(entries: Mapping[tuple[str, str], dict], denoiser: str) -> float | None:
    """The alignment with ``denoiser``'s targets among one run's chosen evaluations (None where not measured)."""
    entry = next(
        (e for (name, _), e in entries.items() if name == "score_alignment" and e["settings"]["denoiser"] == denoiser),
        None,
    )
    return None if entry is None else entry["results"]["score"]


def score_alignment(run: Run, denoiser: str) -> float | None:
    """A run's stored alignment with the score-based targets of ``denoiser`` (None where not measured)."""
    return _alignment(chosen_evaluations(run), denoiser)


def alignment_points(runs: Sequence[Run], denoiser: str, labels: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """(alignment with the score-based targets of ``denoiser``, AutoAttack ℓ2 accuracy) of every run
    that has both stored, by its label; runs scored against another denoiser are left out."""
    points = {}
    for run in runs:
        entries = chosen_evaluations(run)
        alignment = _alignment(entries, denoiser)
        attacked = entries.get(("autoattack", "l2"))
        if alignment is not None and attacked is not None:
            points[labels.get(run.name, run.name)] = (alignment, attacked["results"]["robust"])
    return points


def run_configurations(runs: Sequence[Run], labels: Mapping[str, str]) -> dict[str, str]:
    """Each run's :attr:`~pagcore.store.runs.Run.configuration` by its label (as :func:`alignment_points`
    names it), so that :func:`alignment_verdict` can average a configuration's seeds into one point."""
    return {labels.get(run.name, run.name): run.configuration for run in runs}


def alignment_seed_spread(denoiser: str, scale: str, runs_dir: str = "", kind: str = "real") -> AlignmentSpread | None:
    """The seed spread of the alignment with ``denoiser``'s targets: the widest among the rule's seed
    rows at ``scale`` (None until one has its seeds measured)."""
    return alignment_spread(
        {
            f"{ROW_LABELS.get(row, row)} ({scale})": [
                a for run in runs if (a := score_alignment(run, denoiser)) is not None
            ]
            for row, runs in seed_row_runs(scale, runs_dir, kind).items()
        }
    )


def pictures_alignment_reading(runs: Mapping[str, Run | None], denoiser: str, spread: AlignmentSpread | None) -> str:
    """Markdown: a number to read a grid of PAG pictures by, each pictured model's alignment with the
    score-based targets (a reference that favours no trained classifier), and which model aligns
    best beyond ``spread``."""
    scores = {
        label: a for label, run in runs.items() if run is not None and (a := score_alignment(run, denoiser)) is not None
    }
    if not scores:
        return "No pictured model has its alignment with the score-based targets measured: read the pictures by eye."
    head = (
        "A number to read the pictures by: the mean cosine between each model's input-gradients and the score-based "
        "targets of the book's denoiser ({ref}`chapter-score`), which favour no trained classifier. "
        + "; ".join(f"{label}: {a:.3f}" for label, a in scores.items())
        + "."
    )
    if len(scores) < 2:
        return head
    if spread is None:
        return head + " The spread of this cosine over seeds is not measured yet, so no model is ranked."
    best = max(scores, key=scores.get)
    beaten = [label for label, a in scores.items() if label != best and aligned_above(spread, scores[best], a)]
    tied = [label for label in scores if label not in beaten and label != best]
    text = (
        f" Over the rows that {{ref}}`the rule of evidence <rule-of-evidence>` trains with several seeds, "
        f"{spread.words('cosines')}"
    )
    if not beaten:
        return head + text + ": no model aligns better than the others beyond that."
    return (
        head
        + text
        + f": {best} aligns best, beyond that margin over {listed(beaten)}"
        + (f", while {listed(tied)} cannot be told from it." if tied else ".")
    )


def alignment_figure(points: Mapping[str, tuple[float, float]]) -> Figure:
    """Robust accuracy against alignment with the score-based targets, one labelled point per run."""
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.55 * TEXT_WIDTH), layout="constrained")
        for i, (label, (alignment, robust)) in enumerate(points.items()):
            style = line_style(i)
            ax.scatter(
                alignment,
                100 * robust,
                color=style["color"],
                marker=style["marker"],
                s=36,
                label=readable(label),
            )
        ax.set_xlabel("alignment with the score-based targets")
        percent_axis(ax, label="AutoAttack ℓ2 accuracy (%)")
        if points:
            legend_outside(fig, where="below")
    return fig


def trained_towards(runs: Sequence[Run], denoiser: str, labels: Mapping[str, str]) -> set[str]:
    """The labels of the runs trained on ``denoiser``'s targets: they align with them by construction."""
    return {
        labels.get(run.name, run.name)
        for run in runs
        if run.params.get("source") == "score" and run.params.get("denoiser") == denoiser
    }


def alignment_verdict(
    points: Mapping[str, tuple[float, float]],
    built_in: Collection[str] = (),
    configurations: Mapping[str, str] | None = None,
) -> str:
    """The later paper's "better alignment, more robustness", read from the rank correlation of the
    runs' alignment and robust accuracy, one point per training configuration (``configurations``,
    :func:`run_configurations`; a run without one stands alone), and its bootstrap interval; then again
    without the ``built_in`` runs (trained on these very targets), which the claim must survive to say
    more than that training towards the targets aligns a model with them."""
    if len(points) < 3:
        return (
            f"{len(points)} run{'s have' if len(points) != 1 else ' has'} both an alignment with the score-based "
            "targets and AutoAttack ℓ2 stored; at least three are needed for a rank correlation, so the claim is "
            "not judged yet."
        )
    merged = seed_means(points, configurations or {})
    if len(merged) < 3:
        return (
            f"The {len(points)} runs with both an alignment with the score-based targets and AutoAttack ℓ2 stored "
            f"are {configurations_words(len(merged), len(points))}; at least three are needed for a rank "
            "correlation, so the claim is not judged yet."
        )
    return alignment_claim(
        merged,
        "the alignment with the score-based targets and AutoAttack ℓ2 accuracy",
        f"Over {configurations_words(len(merged), len(points))}",
        [label for label in merged if label in built_in],
        lambda n: (
            f"{'one' if n == 1 else n} configuration{'s' if n != 1 else ''} trained on these targets, which "
            f"{verb(n, 'align')} with them by construction"
        ),
    )


def stored_alignment_verdict(store: RunStore, denoiser: str, scale: str, kind: str = "real") -> str:
    """:func:`alignment_verdict` over every stored CIFAR-10 run at ``scale`` with both measures against
    ``denoiser``'s targets, the runs trained on them set apart."""
    every = store.select(kind=kind, dataset="cifar10", scale=scale)
    return alignment_verdict(
        alignment_points(every, denoiser, {}), trained_towards(every, denoiser, {}), run_configurations(every, {})
    )


def run_table(runs: Mapping[str, Run | None]) -> str:
    """Markdown: clean and PGD-20 accuracy of each row on its whole test set ('not run' where missing)."""
    rows = []
    for label, run in runs.items():
        metrics = (run.metrics or {}) if run is not None else {}
        rows.append((label, *(percent(metrics.get(key)) for key in ("clean", "linf", "l2"))))
    return markdown_table(("row", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2"), rows)


def denoiser_status(run: Run | None) -> str:
    """Whether a finished denoiser exists and what it knows, in words."""
    if run is None:
        return (
            "No denoiser has been trained yet, so this chapter has no numbers: the denoiser, its targets, the "
            "score-based rows and the alignment below all wait for `python -m pagcore denoiser`."
        )
    p = run.params
    minutes = run.record["wall_seconds"] / 60
    return (
        f"The book's denoiser is a U-Net of width {p['width']} trained for {p['epochs']} epochs on the "
        f"{SPECS[p['dataset']].title} training set, at noise levels σ from {p['sigma_min']:g} to {p['sigma_max']:g}, "
        f"in {minutes:.0f} minutes ({'; '.join(training_devices(run))}); its record is at the end of the chapter."
    )


def empty_figure(message: str) -> Figure:
    """A small figure that says why there is nothing to draw yet."""
    with book_style():
        fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 0.25 * TEXT_WIDTH), layout="constrained")
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return fig


LABEL_OVERLAP = 0.05
"""A relative difference in squared error below which the labelled and unlabelled curves cannot be told
apart at the figure's scale."""


def quality_reading(metrics: Mapping[str, Any], sigma: float) -> str:
    """What the quality table says at the noise level nearest to the targets' ``sigma``."""
    errors = metrics["errors"]
    nearest = min(errors, key=lambda s: abs(float(s) - sigma))
    at = errors[nearest]

    def rms(key: str) -> str:
        return f"{math.sqrt(at[key]):.3f}"

    _, information = class_information(metrics)
    # Where the label barely changes the error, the figure's two curves of our denoiser coincide: say so.
    apart = max(abs(e["conditional"] - e["unconditional"]) / e["unconditional"] for e in errors.values())
    overlap = (
        f" With and without the label, our denoiser's errors differ by at most {100 * apart:.0f} % at any σ, so its "
        "two curves lie on top of each other in the figure."
        if apart < LABEL_OVERLAP
        else ""
    )
    level = (
        f"At the targets' σ = {sigma:g}"
        if math.isclose(float(nearest), sigma)
        else f"At σ = {float(nearest):g}, the measured level nearest the targets' {sigma:g}"
    )
    return (
        f"{level}, the RMS error per pixel is "
        f"{rms('conditional')} for our denoiser with the true label and {rms('unconditional')} without it, against "
        f"{rms('gaussian')} for the optimal linear denoiser and {rms('noisy')} for the noisy image; the optimal "
        f"denoiser of the training set, which can only return blends of training images, reaches {rms('empirical')}."
        + overlap
        + " "
        + information
    )


def finding(denoiser: Run | None, sbg: Run | None, vanilla: Run | None, judgement: str, alignment: str) -> str:
    """The chapter's finding: what the denoiser knows, what the score-based row gives, and the
    alignment claim (``judgement`` is the rule of evidence's verdict on the row, in words)."""
    if denoiser is None:
        return (
            "No denoiser has been trained yet, so no score-based target, row or alignment exists: this chapter "
            "has no result."
        )
    knows, _ = class_information(denoiser.metrics)
    parts = [
        "The denoiser's implicit classifier "
        + ("beats chance, so its targets can carry class information." if knows else "does not beat chance.")
    ]
    if sbg is None or not sbg.metrics:
        parts.append("No score-based PAG row has been trained yet.")
    else:
        m = sbg.metrics
        base = f" (vanilla {percent(vanilla.metrics['l2'])} ℓ2)" if vanilla is not None and vanilla.metrics else ""
        parts.append(
            f"The score-based row ({sbg.params['epochs']} epochs) reaches {percent(m['clean'])} clean, "
            f"{percent(m['linf'])} under ℓ∞ and "
            f"{percent(m['l2'])} under ℓ2 PGD-20{base}; under the rule of evidence, which reads its AutoAttack "
            f"numbers and masking checklist from the CIFAR-10 chapter's tables, it is {judgement}."
        )
    parts.append(alignment)
    return " ".join(parts)


STL10_TABLE = "the STL-10 results table ({numref}`tab-stl10`)"
"""Where the STL-10 chapter judges the score-based row (a role: the line is glued by a MyST-format directive)."""


def stl10_line(store: RunStore, kind: str = "real", scale: str = "cpu") -> str:
    """Whether the STL-10 results table can have a score-based row: only with a denoiser of its own whose
    implicit classifier beats chance. A measured STL-10 denoiser is reported with its numbers either way,
    and the row at ``scale`` with its own once trained."""
    chosen = book_denoiser(store, dataset="stl10")
    measured = chosen or newest_denoiser(denoiser_store(store.root), "stl10", kind)
    if measured is None:
        return (
            "STL-10 has no trained denoiser yet (one would learn from its 5,000 labelled training images alone), "
            f"so {STL10_TABLE} has no score-based row."
        )
    p = measured.params
    head = (
        f"An STL-10 denoiser is stored: a U-Net of width {p['width']} over {len(p['multipliers'])} resolutions, "
        f"trained for {p['epochs']} epochs on STL-10's 5,000 labelled training images "
        f"({measured.record['wall_seconds'] / 60:.0f} minutes). "
    )
    beyond, information = class_information(measured.metrics)
    if chosen is not None:
        overrides = score_overrides("stl10")
        row = RealDataExperiment("stl10", {"scale": scale}, store, kind=kind).run("score", **overrides)
        if row is None:  # a run the experiment returns is complete, metrics and all
            tail = " Its score-based row is in the queue of the book's runs."
        else:
            m = row.metrics
            lam = (
                f"λ = {row.params['lam']:g}, the authors' CIFAR-10 value, since none is published for STL-10"
                if "lam" in overrides
                else f"λ = {row.params['lam']:g}"
            )
            tail = (
                f" Its score-based row ({row.params['epochs']} epochs at the {scale} scale, {lam}) reaches "
                f"{percent(m['clean'])} clean, {percent(m['linf'])} under ℓ∞ and {percent(m['l2'])} under ℓ2 "
                f"PGD-20; {STL10_TABLE} judges it beside the paper's rows."
            )
    elif beyond:
        tail = f" It is not the book's STL-10 denoiser, so {STL10_TABLE} has no score-based row yet."
    else:
        tail = f" So {STL10_TABLE} has no score-based row."
    return head + information + tail


def box_line(scale: str, runs_dir: str = "", kind: str = "real") -> str:
    """The chapter's state for the book's opening box: whether a denoiser and a score-based row exist."""
    store = RunStore(runs_dir or None)
    denoiser = book_denoiser(store)
    head = f"Score-based targets (CIFAR-10, {scale} scale, {{ref}}`chapter-score`): "
    if denoiser is None:
        return head + "no denoiser has been trained yet, so no score-based row exists."
    metrics = denoiser.metrics
    implicit = f"{percent(metrics['implicit_classifier']['accuracy'])} of {metrics['test_images']} test images"
    row = RealDataExperiment("cifar10", {"scale": scale}, store, kind=kind).run("score", **score_overrides("cifar10"))
    if row is None:
        trained = "the score-based PAG row has not been trained yet"
    else:
        m = row.metrics
        trained = (
            f"the score-based PAG row ({row.params['epochs']} epochs) reaches {percent(m['clean'])} clean, "
            f"{percent(m['linf'])} under ℓ∞ and {percent(m['l2'])} under ℓ2 PGD-20"
        )
    return head + (
        f"the denoiser's implicit classifier is right on {implicit} (chance {percent(metrics['chance'])}); "
        f"{trained}. {stored_alignment_verdict(store, denoiser.name, scale, kind)}"
    )
