"""The randomized-smoothing chapter's tables, pictures and verdict, from the stored runs trained with
Gaussian noise and their stored evaluations (``python -m pagcore evaluate --certify``, and with
``--smoothed-draws M``, PGD, the PAG score and the pictures of the soft smoothed classifier).

Kaur, Cohen & Lipton's claim has two halves, and the verdict needs both from the same model: the
smoothed classifier is robust (certified beyond what a constant classifier certifies), and its
gradients are perceptually aligned (its PAG score clearly above vanilla's, against the same
reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pagcore.book.evidence import SIGNIFICANCE, chance, sampling_std
from pagcore.book.masking import ALIGNMENT_MARGIN, NOTHING
from pagcore.book.text import NORM_WORDS, listed, markdown_table, percent
from pagcore.data import SPECS
from pagcore.evaluate.stored import CERTIFIED_RADII, chosen_evaluations, smoothed_pictures_folder
from pagcore.orchestrate.book_runs import SMOOTHING_SIGMAS
from pagcore.orchestrate.queue import chapter_runs
from pagcore.store.runs import Run

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
        "attacked through its smoothed classifier": lambda run: _entry(run, "pgd20", "l2", smoothed=True),
        "scored": lambda run: _entry(run, "pag_score", smoothed=True),
        "pictured": lambda run: _entry(run, "pictures", "l2", smoothed=True),
    }
    counts = ", ".join(f"{sum(bool(has(run)) for run in done.values())} {step}" for step, has in steps.items())
    return (
        f"{len(done)} of the {len(runs)} base classifiers (σ = {', '.join(f'{s:g}' for s in done)}) have stored "
        f"runs at the {scale} scale, trained for {', '.join(sorted({str(r.params['epochs']) for r in done.values()}))} "
        f"epochs; of these, {counts}. Whatever has not been done reads 'not run'."
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
                results["images"],
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
        rows.append((f"σ = {sigma:g}, base", *(percent(v) for v in base), metrics.get("test_images", NOTHING)))
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
                first["results"]["images"],
            )
        )
    return markdown_table(("classifier", "clean", "PGD-20 ℓ∞", "PGD-20 ℓ2", "images"), rows)


def alignment_scores(runs: Mapping[float, Run | None], others: Mapping[str, Run | None]) -> dict[str, dict]:
    """The PAG score of every model the chapter compares: ``others`` (label -> run), then per σ the base
    classifier and its smoothed classifier. Each: alignment, confidence, reference, images."""
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
            "reference": entry["settings"]["reference"],
            "images": entry["results"]["gradient_alignment"]["images"],
        }
        for label, entry in found.items()
        if entry is not None
    }


def alignment_table(scores: Mapping[str, dict]) -> str:
    """Markdown: each model's gradient alignment and targeted confidence against the reference."""
    rows = [(label, f"{s['alignment']:.2f}", percent(s["confidence"]), s["images"]) for label, s in scores.items()]
    if not rows:
        rows.append(("no model scored yet", NOTHING, NOTHING, ""))
    return markdown_table(("model", "alignment", "targeted confidence", "images"), rows)


@dataclass(frozen=True)
class SmoothedPictures:
    """A noise-trained run's smoothed pictures, shaped like a run for the book's PAG grid figure."""

    run: Run
    draws: int

    @property
    def artifacts(self) -> Path:
        return smoothed_pictures_folder(self.run, self.draws)

    @property
    def params(self) -> dict[str, Any]:
        return self.run.params

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.run.metrics


def smoothed_pictures(run: Run | None) -> SmoothedPictures | None:
    """The stored pictures of ``run``'s smoothed classifier (those with the most draws), or None."""
    entry = _entry(run, "pictures", "l2", smoothed=True)
    return SmoothedPictures(run, entry["settings"]["smoothed"]["draws"]) if entry else None


def radius_ceiling(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give with ``n`` draws: even when every draw agrees, the
    Clopper-Pearson bound on p_A is alpha^(1/n), and the radius is σ Φ⁻¹ of that bound."""
    return sigma * NormalDist().inv_cdf(alpha ** (1 / n))


def ceiling_sentence(runs: Mapping[float, Run | None], n: int, alpha: float) -> str:
    """The radius ceiling of each σ, with the draws each stored certificate used (``n`` otherwise)."""
    ceilings = []
    for sigma, run in runs.items():
        entry = _entry(run, "certify")
        draws, level = (entry["settings"]["n"], entry["settings"]["alpha"]) if entry else (n, alpha)
        ceilings.append(f"{radius_ceiling(sigma, draws, level):.2f} for σ = {sigma:g} (n = {draws:,})")
    return (
        "Even when every draw agrees, the Clopper–Pearson bound on p_A cannot pass α^(1/n), so no radius above "
        f"σ·Φ⁻¹(α^(1/n)) can be certified: {listed(ceilings)}. A constant classifier certifies exactly its "
        "tenth of the images up to that ceiling, and nothing beyond."
    )


def certified_beyond_chance(entry: Mapping[str, Any], num_classes: int, radius: float = CLAIM_RADIUS) -> bool:
    """Whether the certified accuracy at ``radius`` passes what a constant classifier certifies (chance:
    all its draws agree, so it certifies its class at any radius) by the rule's margin."""
    results = entry["results"]
    share = results["certified_accuracy"][f"{radius:g}"]
    return share - chance(num_classes) > SIGNIFICANCE * sampling_std(chance(num_classes), results["images"])


def verdict(
    runs: Mapping[float, Run | None], scores: Mapping[str, dict], vanilla_label: str, num_classes: int
) -> str:
    """The chapter's finding: per σ, what is certified and how the smoothed gradients align against
    vanilla's; then whether the stored runs support Kaur, Cohen & Lipton's claim."""
    vanilla = scores.get(vanilla_label)
    parts, robust_and_aligned, judged = [], [], 0
    for sigma, run in runs.items():
        certified = _entry(run, "certify")
        smoothed = next((s for label, s in scores.items() if label.startswith(f"σ = {sigma:g}, smoothed")), None)
        missing = [
            what
            for what, absent in (
                ("no run", run is None),
                ("no certificate", run is not None and certified is None),
                ("no PAG score of its smoothed classifier", run is not None and smoothed is None),
                ("no PAG score of vanilla", vanilla is None),
            )
            if absent
        ]
        if missing:
            parts.append(f"σ = {sigma:g}: {', '.join(missing)} yet")
            continue
        judged += 1
        at = certified["results"]["certified_accuracy"][f"{CLAIM_RADIUS:g}"]
        beyond = certified_beyond_chance(certified, num_classes)
        same_reference = smoothed["reference"] == vanilla["reference"]
        aligned = same_reference and smoothed["alignment"] > vanilla["alignment"] + ALIGNMENT_MARGIN
        parts.append(
            f"σ = {sigma:g}: the smoothed classifier certifies {percent(at)} of {certified['results']['images']} test "
            f"images at ℓ2 radius {CLAIM_RADIUS:g} ({'beyond' if beyond else 'not beyond'} the "
            f"{percent(chance(num_classes))} a constant classifier certifies), and its gradient alignment is "
            f"{smoothed['alignment']:.2f} against vanilla's {vanilla['alignment']:.2f}"
            + ("" if same_reference else " (against another reference, so not compared)")
        )
        if beyond and aligned:
            robust_and_aligned.append(f"σ = {sigma:g}")
    if not judged:
        answer = "Kaur, Cohen & Lipton's claim is not judged yet."
    elif robust_and_aligned:
        answer = (
            f"With {listed(robust_and_aligned)}, a classifier made robust by randomized smoothing, never by "
            "adversarial training, also has gradients clearly better aligned than vanilla's: the runs support "
            "Kaur, Cohen & Lipton's claim, at the cpu scale."
        )
    else:
        answer = (
            "No smoothed classifier is both certified beyond chance and clearly better aligned than vanilla "
            f"(by more than {ALIGNMENT_MARGIN:g} in alignment): the runs do not support the claim at the cpu scale."
        )
    return "; ".join(parts) + ". " + answer


def stored_runs(scale: str, runs_dir: str = "", kind: str = "real") -> tuple[dict[float, Run | None], Run | None]:
    """The stored base classifiers of the book's σ values on CIFAR-10 at ``scale``, and vanilla."""
    points = {f"σ = {s:g}": ("gaussian_noise", {"noise_sigma": s}) for s in SMOOTHING_SIGMAS}
    points["vanilla"] = ("vanilla", {})
    found = chapter_runs("cifar10", points, knobs={"scale": scale}, runs_dir=runs_dir, kind=kind)
    return {s: found[f"σ = {s:g}"] for s in SMOOTHING_SIGMAS}, found["vanilla"]


def finding(scale: str, runs_dir: str = "", kind: str = "real") -> str:
    """The chapter's verdict for the book's opening box, introduced by what it is about."""
    runs, vanilla = stored_runs(scale, runs_dir, kind)
    scores = alignment_scores(runs, {"vanilla": vanilla})
    num_classes = SPECS["cifar10"].num_classes
    return f"Randomized smoothing (CIFAR-10, {scale} scale, {{ref}}`chapter-smoothing`): " + verdict(
        runs, scores, "vanilla", num_classes
    )
