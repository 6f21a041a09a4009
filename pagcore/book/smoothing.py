"""The randomized-smoothing chapter's tables, pictures and verdict, from the stored runs trained with
Gaussian noise and their stored evaluations (``python -m pagcore evaluate --certify``, and with
``--smoothed-draws M``, PGD, the PAG score and the pictures of the soft smoothed classifier).

Kaur, Cohen & Lipton's claim has two halves, and the verdict needs both from the same model: the
smoothed classifier is robust (certified beyond what a constant classifier certifies), and its
gradients are perceptually aligned (its PAG score above vanilla's, against the same reference, by
more than the score's seed spread allows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pagcore.book.evidence import (
    SIGNIFICANCE,
    UNMEASURED_SPREAD,
    AlignmentSpread,
    aligned_above,
    chance,
    fits_labels,
    sampling_std,
    side,
    spread_words,
)
from pagcore.book.figures import PAG_ROW_READING
from pagcore.book.masking import NOTHING, run_label
from pagcore.book.text import NORM_WORDS, listed, markdown_table, percent, shown_points
from pagcore.data import SPECS
from pagcore.evaluate.final import PICTURE_NORM
from pagcore.evaluate.stored import CERTIFIED_RADII, chosen_evaluations
from pagcore.orchestrate.book_runs import SMOOTHING_SIGMAS
from pagcore.orchestrate.experiments import ROW_LABELS
from pagcore.orchestrate.queue import chapter_runs
from pagcore.store.runs import Run

COMPARED_ROWS = ("vanilla", "nearest_neighbor", "adversarial_l2")
"""The rows the smoothed classifiers are put beside: the baseline, nearest neighbour (the model-free PAG row
whose seeds the rule of evidence measures), and the adversarially trained model every PAG score of the
chapter is measured against."""

REFERENCE_ROW = "adversarial_l2"

CLAIM_RADIUS = 0.5
"""The ℓ2 radius at which the chapter reads certified accuracy: the book's ℓ2 threat model on CIFAR-10."""


def _entry(run: Run | None, name: str, norm: str = "all", smoothed: bool = False) -> dict | None:
    return chosen_evaluations(run, smoothed=smoothed).get((name, norm)) if run is not None else None


def status(runs: Mapping[float, Run | None], scale: str) -> str:
    """How much of the chapter rests on real runs: base classifiers trained, certified, attacked, scored."""
    done = {sigma: run for sigma, run in runs.items() if run is not None}
    if not done:
        return f"No base classifier has been trained at the {scale} scale yet, so this chapter shows no numbers."
    steps = {
        "certified": lambda run: _entry(run, "certify"),
        "attacked through smoothing": lambda run: _entry(run, "pgd20", "l2", smoothed=True),
        "scored": lambda run: _entry(run, "pag_score", smoothed=True),
        "pictured": lambda run: _entry(run, "pictures", PICTURE_NORM, smoothed=True),
    }
    sigmas = f"σ = {', '.join(f'{s:g}' for s in done)}"
    epochs = ", ".join(sorted({str(r.params["epochs"]) for r in done.values()}))
    counts = {step: sum(bool(has(run)) for run in done.values()) for step, has in steps.items()}
    if len(done) == len(runs) and all(n == len(done) for n in counts.values()):
        every = "Both" if len(done) == 2 else f"All {len(done)}" if len(done) > 2 else "The"
        return (
            f"{every} base classifier{'s' if len(done) > 1 else ''} ({sigmas}) {'are' if len(done) > 1 else 'is'} "
            f"stored at the {scale} scale, trained for {epochs} epochs, and {listed(list(counts))}."
        )
    done_words = "; ".join(f"{step}: {n} of {len(done)}" for step, n in counts.items())
    return (
        f"{len(done)} of the {len(runs)} base classifiers ({sigmas}) have stored runs at the {scale} scale, trained "
        f"for {epochs} epochs ({done_words}). Whatever has not been done reads 'not run'."
    )


def certified_table(runs: Mapping[float, Run | None]) -> str:
    """Markdown: per σ, the certified accuracy of the smoothed classifier at each ℓ2 radius, with the
    images, the Monte Carlo draws and the share of abstentions behind it."""
    rows = []
    for sigma, run in runs.items():
        entry = _entry(run, "certify")
        if entry is None:
            rows.append((f"{sigma:g}", NOTHING, "", "", *(NOTHING for _ in CERTIFIED_RADII)))
            continue
        results, settings = entry["results"], entry["settings"]
        rows.append(
            (
                f"{sigma:g}",
                f"{results['images']:,}",
                f"{settings['n']:,}",
                percent(results["abstained"]),
                *(percent(results["certified_accuracy"][f"{r:g}"]) for r in CERTIFIED_RADII),
            )
        )
    radii = (f"r = {r:g}" for r in CERTIFIED_RADII)
    return markdown_table(("σ", "images", "n", "abstained", *radii), rows)


def robustness_table(runs: Mapping[float, Run | None]) -> str:
    """Markdown: per σ, the base classifier on the whole test set, then its smoothed classifier on its
    subset, clean and under PGD-20 in both threat models."""
    rows = []
    for sigma, run in runs.items():
        metrics = (run.metrics or {}) if run is not None else {}
        base = (metrics.get(key) for key in ("clean", "linf", "l2"))
        rows.append(
            (
                f"σ = {sigma:g}, base",
                *(percent(v) for v in base),
                f"{metrics['test_images']:,}" if "test_images" in metrics else NOTHING,
            )
        )
        attacked = {norm: _entry(run, "pgd20", norm, smoothed=True) for norm in NORM_WORDS}
        if not any(attacked.values()):
            rows.append((f"σ = {sigma:g}, smoothed", NOTHING, NOTHING, NOTHING, ""))
            continue
        first = next(entry for entry in attacked.values() if entry)
        draws = first["settings"]["smoothed"]["draws"]
        robust = [percent(entry["results"]["robust"]) if entry else NOTHING for entry in attacked.values()]
        rows.append(
            (
                f"σ = {sigma:g}, smoothed (m = {draws})",
                percent(first["results"]["clean"]),
                *robust,
                f"{first['results']['images']:,}",
            )
        )
    return markdown_table(("classifier", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2", "images"), rows)


def robustness_reading(runs: Mapping[float, Run | None]) -> str:
    """What the table says of clean accuracy, base against smoothed: the base classifier meets clean
    images, unlike anything it trained on, while the smoothed classifier votes over noisy copies like
    its training images, so the smoothed one may be the more accurate; whether it is here, beyond the
    subset's sampling error."""
    parts = []
    for sigma, run in runs.items():
        entry = next((e for norm in NORM_WORDS if (e := _entry(run, "pgd20", norm, smoothed=True))), None)
        if run is None or not run.metrics or entry is None:
            continue
        base, smoothed, images = run.metrics["clean"], entry["results"]["clean"], entry["results"]["images"]
        error = math.hypot(sampling_std(base, run.metrics["test_images"]), sampling_std(smoothed, images))
        gap = shown_points(smoothed, base)
        beyond = side(smoothed - base, error) != 0
        parts.append(
            f"at σ = {sigma:g} the smoothed classifier is {abs(gap):.1f} points "
            f"{'above' if gap >= 0 else 'below'} its base on clean images ({images:,} images; "
            f"{'beyond' if beyond else 'within'} twice the sampling error, {100 * SIGNIFICANCE * error:.1f} points)"
        )
    if not parts:
        return "No smoothed classifier has been attacked yet."
    return (
        "Each base classifier was trained on noisy images only, so clean images are new to it, while its "
        "smoothed classifier classifies noisy copies of the image, as in training: " + "; ".join(parts) + "."
    )


def alignment_scores(
    runs: Mapping[float, Run | None], others: Mapping[str, Run | None], reference: Run | None
) -> dict[str, dict]:
    """The PAG score against ``reference`` of every model the chapter compares: ``others`` (label ->
    run), then per σ the base classifier and its smoothed classifier. Scores against another
    reference are left out: they do not compare. Each: alignment, confidence, images, pairs."""
    found: dict[str, dict | None] = {label: _entry(run, "pag_score") for label, run in others.items()}
    for sigma, run in runs.items():
        found[f"σ = {sigma:g}, base"] = _entry(run, "pag_score")
        smoothed = _entry(run, "pag_score", smoothed=True)
        draws = f" (m = {smoothed['settings']['smoothed']['draws']})" if smoothed else ""
        found[f"σ = {sigma:g}, smoothed{draws}"] = smoothed
    return {
        label: {
            "alignment": entry["results"]["gradient_alignment"]["score"],
            "confidence": entry["results"]["targeted_confidence"]["score"],
            "images": entry["results"]["gradient_alignment"]["images"],
            "pairs": entry["results"]["targeted_confidence"]["pairs"],
        }
        for label, entry in found.items()
        if entry is not None and reference is not None and entry["settings"]["reference"] == reference.name
    }


def alignment_table(scores: Mapping[str, dict]) -> str:
    """Markdown: each model's gradient alignment and targeted confidence against the reference, with
    the images the alignment averages over and the (image, target class) pairs of the confidence."""
    rows = [
        (label, f"{s['alignment']:.2f}", percent(s["confidence"]), f"{s['images']:,}", f"{s['pairs']:,}")
        for label, s in scores.items()
    ]
    if not rows:
        rows.append(("no model scored yet", NOTHING, NOTHING, "", ""))
    return markdown_table(("model", "alignment", "targeted confidence", "images", "pairs"), rows)


ALIGNMENT_GROUPS = (
    "vanilla",
    "other models of this book",
    "noise-trained base classifiers",
    "their smoothed classifiers",
)
"""The alignment figure's groups: vanilla apart, since the chapter's verdict compares with it."""


def _scored(
    every_run: Sequence[Run], runs: Mapping[float, Run | None], reference: Run
) -> dict[str, list[tuple[Run, float, float]]]:
    """(run, gradient alignment against ``reference``, PGD-20 ℓ2 accuracy) per group of
    :data:`ALIGNMENT_GROUPS`; the reference itself and scores against another are left out."""
    bases = {run.name for run in runs.values() if run is not None}
    groups: dict[str, list[tuple[Run, float, float]]] = {label: [] for label in ALIGNMENT_GROUPS}
    vanilla, other, base, smoothed = ALIGNMENT_GROUPS
    for run in every_run:
        entry = _entry(run, "pag_score")
        if run.name == reference.name or entry is None or entry["settings"]["reference"] != reference.name:
            continue
        if run.metrics is not None:
            alignment = entry["results"]["gradient_alignment"]["score"]
            group = base if run.name in bases else vanilla if run.params["objective"] == "cross_entropy" else other
            groups[group].append((run, alignment, run.metrics["l2"]))
    for run in runs.values():
        score, attacked = _entry(run, "pag_score", smoothed=True), _entry(run, "pgd20", "l2", smoothed=True)
        if score is not None and attacked is not None and score["settings"]["reference"] == reference.name:
            alignment = score["results"]["gradient_alignment"]["score"]
            groups[smoothed].append((run, alignment, attacked["results"]["robust"]))
    return groups


def alignment_groups(
    every_run: Sequence[Run], runs: Mapping[float, Run | None], reference: Run | None
) -> dict[str, list[tuple[float, float]]]:
    """For :func:`pagcore.book.figures.alignment_scatter`: (gradient alignment against ``reference``,
    PGD-20 ℓ2 accuracy) of every model of ``every_run`` scored against it (whole test set), then of the
    noise-trained base classifiers of ``runs`` and of their smoothed classifiers (their seeded subset,
    through the Monte Carlo gradient)."""
    if reference is None:
        return {}
    groups = _scored(every_run, runs, reference)
    return {label: [(a, r) for _, a, r in points] for label, points in groups.items() if points}


def alignment_reading(
    every_run: Sequence[Run], runs: Mapping[float, Run | None], reference: Run | None, spread: AlignmentSpread | None
) -> str:
    """Where the smoothed classifiers fall among the other models of :func:`alignment_groups` on the
    alignment axis; a gap within the PAG score's seed ``spread`` does not count."""
    groups = _scored(every_run, runs, reference) if reference is not None else {}
    vanilla, other, _, smoothed = (groups.get(label, []) for label in ALIGNMENT_GROUPS)
    other = vanilla + other
    if not smoothed or not other:
        return "The plot needs a scored smoothed classifier and other scored models before it can be read."
    models = "the other model" if len(other) == 1 else f"the {len(other)} other models"
    placed = [
        f"{alignment:.2f} for σ = {run.params['noise_sigma']:g} "
        + (
            f"(above {sum(aligned_above(spread, alignment, a) for _, a, _ in other)} of {models} by more than "
            f"{spread.margin:.3f}, the margin the score's seed spread sets)"
            if spread is not None
            else f"({UNMEASURED_SPREAD})"
        )
        for run, alignment, _ in sorted(smoothed, key=lambda point: -point[1])
    ]
    best, best_alignment, _ = max(other, key=lambda point: point[1])
    distilled = " distilled from the reference itself," if best.params.get("teacher") == reference.name else ""
    return (
        f"Against the same reference, the smoothed classifiers' gradient alignment is {listed(placed)}; the best "
        f"aligned other model, {run_label(best)},{distilled} reaches {best_alignment:.2f}. The smoothed classifiers' "
        "PGD-20 ℓ2 accuracy is measured on their seeded subset through the Monte Carlo gradient, an upper bound, "
        "so their height on the plot is less certain than their place along it."
    )


@dataclass(frozen=True)
class SmoothedPictures:
    """A noise-trained run's smoothed pictures, shaped like a run for the book's PAG grid figure."""

    run: Run
    folder: str  # under the run's folder, as its stored pictures evaluation names it

    @property
    def artifacts(self) -> Path:
        return self.run.path / self.folder

    @property
    def params(self) -> dict[str, Any]:
        return self.run.params

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.run.metrics


def smoothed_pictures(run: Run | None) -> SmoothedPictures | None:
    """The stored pictures of ``run``'s smoothed classifier (those with the most draws), or None."""
    entry = _entry(run, "pictures", PICTURE_NORM, smoothed=True)
    return SmoothedPictures(run, entry["results"]["folder"]) if entry else None


def pictures_draws(runs: Mapping[float, Run | None]) -> str:
    """The noise draws per step behind the stored smoothed pictures, for the grid's caption: "m = 8",
    or each σ's m where they differ."""
    draws = {
        sigma: entry["settings"]["smoothed"]["draws"]
        for sigma, run in runs.items()
        if (entry := _entry(run, "pictures", PICTURE_NORM, smoothed=True)) is not None
    }
    if not draws:
        return "no noise draws, since no smoothed picture is stored yet"
    if len(set(draws.values())) == 1:
        return f"m = {next(iter(draws.values()))} noise draws per step"
    return listed([f"{m} (σ = {sigma:g})" for sigma, m in draws.items()]) + " noise draws per step"


def pictures_reading(
    runs: Mapping[float, Run | None], shown: bool, scores: Mapping[str, dict] | None = None, vanilla_label: str = ""
) -> str:
    """How to read the chapter's PAG grid, which of its σ rows have their smoothed classifier's
    pictures beside the base classifier's (``shown``: whether the grid has any picture at all), and
    what the pictures show, measured: the reference's confidence in the target class on each
    smoothed classifier's pictures against vanilla's (from the PAG ``scores``)."""
    if not shown:
        return "There are no pictures to read yet."
    reading = PAG_ROW_READING
    smoothed = [f"σ = {sigma:g}" for sigma, run in runs.items() if smoothed_pictures(run) is not None]
    if not smoothed:
        return reading + " No smoothed classifier's pictures are stored yet: the σ rows are base classifiers only."
    reading += (
        f" The smoothed rows ({listed(smoothed)}) are made by the same attack on the smoothed classifier's soft "
        "prediction, the average over Gaussian draws that Kaur, Cohen & Lipton differentiate."
    )
    scores = scores or {}
    vanilla = scores.get(vanilla_label)
    measured = [
        f"{percent(score['confidence'])} on the smoothed {label.split(',')[0]} pictures"
        for label, score in scores.items()
        if ", smoothed" in label
    ]
    if vanilla is None or not measured:
        return reading
    return reading + (
        f" What the eye reads there is measured in the table below: the adversarially trained reference gives "
        f"the target class {listed(measured)}, against {percent(vanilla['confidence'])} on vanilla's "
        "(chance 10%)."
    )


def radius_ceiling(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give with ``n`` draws: even when every draw agrees, the
    Clopper-Pearson bound on p_A is alpha^(1/n), and the radius is σ Φ⁻¹ of that bound."""
    return sigma * NormalDist().inv_cdf(alpha ** (1 / n))


def ceiling_sentence(runs: Mapping[float, Run | None], n0: int, n: int, alpha: float) -> str:
    """The draws of CERTIFY and the radius ceiling of each σ, with the draws each stored certificate
    used (``n0``, ``n`` and ``alpha`` where none is stored)."""
    ceilings = []
    for sigma, run in runs.items():
        entry = _entry(run, "certify")
        draws, level = (entry["settings"]["n"], entry["settings"]["alpha"]) if entry else (n, alpha)
        n0 = entry["settings"]["n0"] if entry else n0
        ceilings.append(f"{radius_ceiling(sigma, draws, level):.2f} for σ = {sigma:g} (n = {draws:,}, α = {level:g})")
    return (
        f"CERTIFY chooses each image's class with n0 = {n0} draws, then bounds p_A with n fresh ones. "
        "Even when every draw agrees, the Clopper–Pearson bound on p_A cannot pass α^(1/n), so no radius above "
        f"σ·Φ⁻¹(α^(1/n)) can be certified: {listed(ceilings)}. A constant classifier certifies the images of its "
        "one class (about a tenth of a class-balanced subset) up to that ceiling, and nothing beyond."
    )


def certified_beyond_chance(entry: Mapping[str, Any], num_classes: int, radius: float = CLAIM_RADIUS) -> bool:
    """Whether the certified accuracy at ``radius`` passes what a constant classifier certifies (chance:
    all its draws agree, so it certifies its class up to the ceiling of :func:`radius_ceiling`) by the
    rule's margin."""
    results = entry["results"]
    share = results["certified_accuracy"][f"{radius:g}"]
    return side(share - chance(num_classes), sampling_std(chance(num_classes), results["images"])) > 0


def smoothed_fits_labels(entry: Mapping[str, Any], num_classes: int) -> bool:
    """The rule's near-chance test for the smoothed classifier: its certified accuracy at radius 0 (its
    clean accuracy, abstentions counted as errors) above twice chance by twice its sampling error."""
    results = entry["results"]
    clean = results["certified_accuracy"]["0"]
    return fits_labels(clean, num_classes, SIGNIFICANCE * sampling_std(clean, results["images"]))


def verdict(
    runs: Mapping[float, Run | None],
    scores: Mapping[str, dict],
    vanilla_label: str,
    num_classes: int,
    scale: str,
    spread: AlignmentSpread | None,
) -> str:
    """The chapter's finding: per σ, what is certified and whether the smoothed gradients align better
    than vanilla's beyond the PAG score's seed ``spread``; then whether the stored runs support Kaur,
    Cohen & Lipton's claim."""
    vanilla = scores.get(vanilla_label)
    parts, robust_and_aligned, judged = [], [], 0
    from_base = []  # (σ, smoothed minus base alignment) of the σ whose base classifier is scored too
    for sigma, run in runs.items():
        certified = _entry(run, "certify")
        smoothed = next((s for label, s in scores.items() if label.startswith(f"σ = {sigma:g}, smoothed")), None)
        missing = [
            what
            for what, absent in (
                ("no run", run is None),
                ("no certificate", run is not None and certified is None),
                ("no PAG score of its smoothed classifier", run is not None and smoothed is None),
                ("no PAG score of vanilla against the same reference", vanilla is None),
            )
            if absent
        ]
        if missing:
            parts.append(f"σ = {sigma:g}: {', '.join(missing)} yet")
            continue
        judged += 1
        at = certified["results"]["certified_accuracy"][f"{CLAIM_RADIUS:g}"]
        beyond = certified_beyond_chance(certified, num_classes) and smoothed_fits_labels(certified, num_classes)
        aligned = aligned_above(spread, smoothed["alignment"], vanilla["alignment"])
        base = scores.get(f"σ = {sigma:g}, base")
        parts.append(
            f"σ = {sigma:g}: the smoothed classifier certifies {percent(at)} of {certified['results']['images']} test "
            f"images at ℓ2 radius {CLAIM_RADIUS:g} ({'beyond' if beyond else 'not beyond'} the "
            f"{percent(chance(num_classes))} a constant classifier certifies; at radius 0, which counts abstentions "
            f"as errors, it certifies {percent(certified['results']['certified_accuracy']['0'])}), and its gradient "
            "alignment is "
            f"{smoothed['alignment']:.2f} against vanilla's {vanilla['alignment']:.2f}"
            + (f" and its unsmoothed base classifier's {base['alignment']:.2f}" if base is not None else "")
        )
        if beyond and aligned:
            robust_and_aligned.append(f"σ = {sigma:g}")
            if base is not None:
                from_base.append((sigma, smoothed["alignment"] - base["alignment"]))
    if not judged:
        answer = "Kaur, Cohen & Lipton's claim is not judged yet."
    elif spread is None:
        answer = f"Kaur, Cohen & Lipton's claim is not judged yet: {UNMEASURED_SPREAD}."
    elif robust_and_aligned:
        answer = (
            f"With {listed(robust_and_aligned)}, a classifier made robust by randomized smoothing, never by "
            f"adversarial training, also has gradients better aligned than vanilla's ({spread_words(spread)}): the "
            f"runs support Kaur, Cohen & Lipton's claim, at the {scale} scale."
        )
        answer += _base_share(from_base, spread)
    else:
        answer = (
            "No smoothed classifier both fits its labels and certifies beyond chance, and is better aligned than "
            f"vanilla ({spread_words(spread)}): the runs do not support the claim at the {scale} scale."
        )
    return "; ".join(parts) + ". " + answer


def stored_runs(
    scale: str, runs_dir: str = "", kind: str = "real"
) -> tuple[dict[float, Run | None], dict[str, Run | None]]:
    """The stored base classifiers of the book's σ values on CIFAR-10 at ``scale``, and the rows the
    chapter compares them with by default (label -> run)."""
    points = {f"σ = {s:g}": ("gaussian_noise", {"noise_sigma": s}) for s in SMOOTHING_SIGMAS}
    points.update({ROW_LABELS[row]: (row, {}) for row in COMPARED_ROWS})
    found = chapter_runs("cifar10", points, knobs={"scale": scale}, runs_dir=runs_dir, kind=kind)
    return {s: found[f"σ = {s:g}"] for s in SMOOTHING_SIGMAS}, {
        ROW_LABELS[row]: found[ROW_LABELS[row]] for row in COMPARED_ROWS
    }


def _base_share(from_base: Sequence[tuple[float, float]], spread: AlignmentSpread) -> str:
    """How much of the supporting σ's alignment the smoothing adds to its noise-trained base classifier's,
    each gain read against the PAG score's seed ``spread``; where none exceeds it, the noise training,
    not the smoothing, carries the alignment."""
    if not from_base:
        return ""
    beyond = [gain > spread.margin for _, gain in from_base]
    gains = listed(
        [
            f"{gain:+.3f} at σ = {sigma:g} ({'beyond' if above else 'within'} the {spread.margin:.3f} margin)"
            for (sigma, gain), above in zip(from_base, beyond)
        ]
    )
    said = f" Over its unsmoothed base classifier, smoothing adds {gains}"
    if any(beyond):
        return said + "."
    return said + ": the aligned gradients come with training on Gaussian noise more than with the smoothing itself."


def finding(scale: str, spread: AlignmentSpread | None, runs_dir: str = "", kind: str = "real") -> str:
    """The chapter's verdict for the book's opening box, introduced by what it is about; ``spread`` is
    the PAG score's seed spread (:func:`~pagcore.book.masking.measured_alignment_spread`)."""
    runs, others = stored_runs(scale, runs_dir, kind)
    scores = alignment_scores(runs, others, others[ROW_LABELS[REFERENCE_ROW]])
    verdict_words = verdict(runs, scores, ROW_LABELS["vanilla"], SPECS["cifar10"].num_classes, scale, spread)
    return f"Randomized smoothing (CIFAR-10, {scale} scale, {{ref}}`chapter-smoothing`): {verdict_words}"
