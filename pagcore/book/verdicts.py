"""What the runs say, in sentences computed from them: each chapter's verdict and status.

No verdict is typed by hand: every sentence here is a function of the stored runs, so it changes
when they change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pagcore.book.evidence import (
    FIT_FACTOR,
    THREAT_METRICS,
    Judgement,
    Measured,
    Noise,
    aligned_above,
    chance,
    compare,
    failed_checks,
    fits_labels,
    judge,
    paper_noise,
    rank_correlation,
    sampling_std,
    separated,
    separation_words,
    side,
    spread_words,
)
from pagcore.book.masking import shared_reference
from pagcore.book.tables import seconds_per_epoch, training_devices
from pagcore.book.text import (
    METRIC_COLUMNS,
    NORM_WORDS,
    listed,
    percent,
    point_differences,
    points,
    shown_points,
    signed_points,
    triple,
)
from pagcore.config import PAPER_PRESET
from pagcore.data import SPECS
from pagcore.evaluate.stored import chosen_evaluations
from pagcore.paper.targets import MODEL_FREE_SOURCES


def cpu_scale_verdict(
    runs: dict[str, Any],
    paper_rows: dict[str, dict[str, float]],
    labels: dict[str, str],
    judgements: Mapping[str, Judgement],
    noise: Noise | None,
    distance_ceiling: float | None = None,
) -> str:
    """What the CPU-scale rows show about the paper's claim, from the stored runs and the verdicts of
    the book's rule (:mod:`pagcore.book.evidence`), as a Markdown list: one item per row and per
    comparison.

    ``distance_ceiling`` is the accuracy of a classifier that sees only an image's distances to the
    class means (see the cpu-scale appendix): a class-mean model at or below it may be robust the way
    such a simple classifier is, which says little about PAG."""
    done = {row: run for row, run in runs.items() if run is not None and run.metrics}
    if "vanilla" not in done or not any(row in done for row in PAG_ROWS):
        return (
            "There is no CPU-scale result to discuss yet: the vanilla row and at least one PAG row must have "
            "real runs first."
        )
    vanilla = done["vanilla"].metrics
    parts = [
        f"At the CPU scale the vanilla model reaches {percent(vanilla['clean'])} clean, "
        f"{percent(vanilla['linf'])} under ℓ∞ and {percent(vanilla['l2'])} under ℓ2 PGD-20."
    ]
    parts += _weak_attack(done["vanilla"])
    for row in PAG_ROWS:
        if row not in done or row not in judgements:
            continue
        m, judged = done[row].metrics, judgements[row]
        sentence = (
            f"{labels.get(row, row)} ({percent(m['clean'])} clean, {percent(m['linf'])} ℓ∞, {percent(m['l2'])} ℓ2): "
            f"**{judged.verdict}**: {'; '.join(judged.reasons)}."
        )
        for caveat in row_caveats(row, done[row], done["vanilla"], distance_ceiling, noise):
            sentence += f" {caveat[0].upper()}{caveat[1:]}."
        parts.append(sentence)
    if noise is not None:
        parts.append(noise.rule_words(labels))
    parts += _disagreements(done, paper_rows, labels, noise)
    parts += _students_and_teachers(done, labels, noise)
    parts.append(
        "These are numbers of a reduced protocol: they can support or contradict the direction of the "
        "paper's claim (robustness without adversarial examples), not its figures."
    )
    return "\n".join(f"- {part}" for part in parts)


# A vanilla model keeping more than this under PGD-20 is worth checking with AutoAttack: it has no
# defence, so what it keeps is more likely the attack's weakness than robustness.
VANILLA_LEFTOVER = 0.01


def _weak_attack(vanilla: Any) -> list[str]:
    """Where vanilla keeps more than a point under PGD-20, what AutoAttack leaves of it on its subset,
    and whether the gap exceeds the rule's multiple of both numbers' sampling errors (same model and
    images, so no seed noise; treating the two as independent only widens the error). A threat model
    whose two attacks ran on different subsets is not read."""
    parts = []
    entries = chosen_evaluations(vanilla)
    for norm in THREAT_METRICS:
        name = NORM_WORDS[norm]
        entry, on_subset = entries.get(("autoattack", norm)), entries.get(("pgd20", norm))
        if vanilla.metrics[norm] <= VANILLA_LEFTOVER or entry is None or on_subset is None:
            continue
        # The gap is the attacks' only on one seeded subset; on two it would mix in the subsets' difference.
        if on_subset["settings"]["subset"] != entry["settings"]["subset"]:
            continue
        pgd, robust = on_subset["results"]["robust"], entry["results"]["robust"]
        images = entry["settings"]["subset"]["size"]
        error = math.hypot(sampling_std(pgd, images), sampling_std(robust, images))
        of_test_set = test_set_words(vanilla.metrics)
        parts.append(
            f"Vanilla keeps {percent(vanilla.metrics[norm])} of {of_test_set} under PGD-20 {name}; on "
            f"{images:,} of those images it keeps {percent(pgd)} under PGD-20 and {percent(robust)} under AutoAttack"
            + _attack_gap_words(pgd - robust, pgd, error, images)
        )
    return parts


def test_set_words(metrics: Mapping[str, Any]) -> str:
    """The test set a run's whole-test-set numbers come from, as a sentence names it: "all 10,000
    CIFAR-10 test images", or "the 5,000-image class-balanced subset of the STL-10 test set"."""
    test_set = metrics.get("test_set", "whole test set")
    return test_set if test_set.startswith("all ") else f"the {test_set}"


def _attack_gap_words(gap: float, pgd: float, error: float, images: int) -> str:
    """How much of what PGD-20 leaves AutoAttack takes, judged by the rule's margin on the gap."""
    if gap <= 0:
        return f": AutoAttack leaves at least as many of these {images:,} images as PGD-20 does."
    if side(gap, error) == 0:
        # One model and the same images: the gap is a count of images, exact on the subset; what it cannot
        # say is how far PGD-20 overstates the whole test set.
        return (
            f": AutoAttack breaks {round(gap * images)} of these {images:,} images that PGD-20 leaves, a gap of "
            f"{100 * gap:.1f} points, too few images to say how far PGD-20 overstates vanilla on the whole test set."
        )
    if gap > pgd / 2:
        return ": AutoAttack takes most of what PGD-20 leaves, so that is the attack's weakness, not robustness."
    return ": AutoAttack takes part of what PGD-20 leaves, beyond sampling error."


def _disagreements(
    done: dict[str, Any], paper_rows: dict[str, dict[str, float]], labels: dict[str, str], noise: Noise | None
) -> list[str]:
    """Where the CPU-scale rows differ from the paper's in kind, not only in level: what PAG costs
    in clean accuracy against vanilla, and how the PAG rows rank in each threat model (rows within
    the noise of each other are not ranked; the paper's rows are ranked by its own seed spread; without
    a measured noise, no ranking is given)."""
    rows = [row for row in PAG_ROWS if row in done and row in paper_rows]
    if not rows or "vanilla" not in paper_rows:
        return []
    ours_cost = [done["vanilla"].metrics["clean"] - done[row].metrics["clean"] for row in rows]
    paper_cost = [paper_rows["vanilla"]["clean"] - paper_rows[row]["clean"] for row in rows]
    parts = [
        f"Against its own vanilla model, PAG training costs {points(min(ours_cost))} to {points(max(ours_cost))} "
        f"points of clean accuracy here, where the same rows cost {points(min(paper_cost))} to "
        f"{points(max(paper_cost))} points in the paper"
        + (
            ": more than twice the paper's largest cost, for which the preset's narrow network and short schedule are "
            "the first suspects."
            if max(ours_cost) > 2 * max(paper_cost)
            else "."
        )
    ]
    if len(rows) < 2 or noise is None:
        return parts

    theirs_noise = paper_noise()
    dataset = done[rows[0]].params["dataset"]
    paper_images = SPECS[dataset].test_size  # the paper's numbers are on the whole test set
    # The paper measures a seed spread on CIFAR-10 only (Table 4): elsewhere it is borrowed, and says so.
    spread = (
        "its own seed spread (Table 4)"
        if dataset == "cifar10"
        else "the seed spread it measures on CIFAR-10 (Table 4), since it has none on STL-10"
    )
    for key, name in (("linf", "ℓ∞"), ("l2", "ℓ2")):
        ours = {row: Measured.of(done[row].metrics, key, row) for row in rows}
        theirs = {row: Measured(paper_rows[row][key], paper_images) for row in rows}
        here = separation_words(separated(ours, key, noise), labels)
        there = separation_words(separated(theirs, key, theirs_noise), labels)
        parts.append(f"Among the PAG rows under {name} PGD-20 here, {here}. In the paper, judged by {spread}, {there}.")
    return parts


def _students_and_teachers(done: dict[str, Any], labels: dict[str, str], noise: Noise | None) -> list[str]:
    """Each RIGD student's robust accuracy beside that of the adversarially trained teacher it distils,
    and the teacher's beside the best model-free row's, the gap read against the ``noise``: RIGD is the
    paper's upper bound only while its teacher is much more robust than what model-free targets give."""
    parts = []
    for norm, name in (("linf", "ℓ∞"), ("l2", "ℓ2")):
        student, teacher = done.get(f"rigd_{norm}"), done.get(f"adversarial_{norm}")
        if student is None or teacher is None:
            continue
        s, t = student.metrics, teacher.metrics
        parts.append(
            f"Under {name} PGD-20, {labels.get(f'rigd_{norm}', f'rigd_{norm}')}, which never sees an attacked "
            f"image, reaches {percent(s[norm])} against the {percent(t[norm])} of the teacher it distils, at "
            f"{percent(s['clean'])} clean against the teacher's {percent(t['clean'])}."
        )
        model_free = [row for row in MODEL_FREE_SOURCES if row in done]
        if model_free:
            # No single "most robust" model-free row is named: they may lie within the noise of each other.
            best = max(model_free, key=lambda row: done[row].metrics[norm])
            highest = done[best].metrics[norm]
            margin = shown_points(t[norm], highest)
            judged = ""
            if noise is not None:
                teacher_row, best_row = (
                    Measured.of(run.metrics, norm, row)
                    for row, run in ((f"adversarial_{norm}", teacher), (best, done[best]))
                )
                allowed = 100 * noise.tolerance(norm, teacher_row, best_row)
                told = "beyond" if noise.differ(norm, teacher_row, best_row) else "within"
                judged = f", {told} the noise (a gap must exceed {allowed:.1f} points)"
            parts.append(
                f"The teacher itself is {abs(margin):.1f} points {'above' if margin >= 0 else 'below'} the "
                f"highest {name} accuracy of the model-free rows ({percent(highest)}){judged}."
            )
    return parts


# A model-free source trains the row of the same name, as does the score-based one; RIGD has a row
# per teacher threat model.
TEACHER_FREE_ROWS = (*MODEL_FREE_SOURCES, "score")
"""The PAG rows whose targets owe nothing to a robust model: the model-free sources and the score-based
row (a denoiser, never attacked). Only these can answer the paper's question."""
PAG_ROWS = (*TEACHER_FREE_ROWS, "rigd_linf", "rigd_l2")


def status_sentence(runs: dict[str, Any], chapter: str, scale: str) -> str:
    """One plain sentence on how much of ``chapter`` at ``scale`` rests on real runs."""
    done = [r for r in runs.values() if r is not None]
    if not done:
        return (
            f"No real run of the {chapter} experiments exists at the {scale} scale yet, so there is nothing of ours "
            "to set beside the paper's numbers."
        )
    epochs = sorted({r.params["epochs"] for r in done})
    schedule = ", ".join(str(e) for e in epochs)
    rest = "; the others read 'not run'" if len(done) < len(runs) else ""
    return (
        f"{len(done)} of the {len(runs)} rows come from real runs at the {scale} scale (schedules of {schedule} "
        f"epochs; the paper trains for {PAPER_PRESET.epochs}){rest}."
    )


def scales_status(runs_by_scale: dict[str, dict[str, Any]], chapter: str) -> str:
    """:func:`status_sentence` for each scale of a chapter."""
    return " ".join(status_sentence(runs, chapter, scale) for scale, runs in runs_by_scale.items())


def seed_verdict(summary: dict[str, Any] | None, reported: dict[str, Any], scale: str, num_classes: int) -> str:
    """How the spread over our seeds at ``scale`` compares with the paper's Table 4, and whether the
    runs fit their labels well enough for that spread to mean what the paper's does."""
    if summary is None or summary["n"] < 2:
        runs = "no run is complete" if summary is None or summary["n"] == 0 else "only one seed has a complete run"
        return f"At the {scale} scale {runs}, so there is no spread to compare yet."
    text = [
        f"At the {scale} scale, over {summary['n']} seeds, the standard deviation is {triple(summary['std'])} "
        f"points (clean / ℓ∞ / ℓ2) against the paper's {triple(reported['std'])} over {reported['seeds']}, "
        f"around means of {triple(summary['mean'])} against the paper's {triple(reported['mean'])}."
    ]
    if not fits_labels(summary["mean"]["clean"], num_classes):
        text.append(
            f"A mean clean accuracy under {FIT_FACTOR:g} × chance "
            f"({percent(FIT_FACTOR * chance(num_classes), digits=0)}) says that at this scale the one-image model "
            "hardly fits its labels: its robust accuracy is that of a near-chance classifier, and its spread "
            "measures how far each seed's training gets out of that regime, not the stability that "
            "the paper's Table 4 shows. The last section says how the rule of evidence uses it."
        )
    return " ".join(text)


# The direction the paper's Figure 5 reports as λ grows: clean accuracy falls, robust accuracy rises.
LAMBDA_TREND = {"clean": -1, "linf": 1, "l2": 1}


def noise_sentence(noise: Noise | None, scale: str, labels: dict[str, str]) -> str:
    """Which rows carry their own seed spread at ``scale``, and the widest spread every other row takes."""
    if noise is None:
        return f"At the {scale} scale no row has two seeds yet, so the rule of evidence judges nothing there."
    own = [row for row in noise.spreads if row in noise.own]
    few = [f"{labels.get(row, row)} ({noise.seeds[row]} seeds)" for row in noise.spreads if row not in noise.own]
    text = f"At the {scale} scale the rule uses " + (
        f"the measured spread of {listed([labels.get(row, row) for row in own])}" if own else "no row's own spread yet"
    )
    if few:
        text += f", not yet that of {listed(few)}, too few seeds"
    # Where one row alone sets the widest, the rows that borrow it are judged more cautiously than the
    # repeated rows' own spreads suggest: the reader must know which way that errs.
    apart = noise.widest_apart(labels)
    return (
        text
        + f"; every other row takes the widest spread measured: {noise.widest_words()}"
        + (f" ({apart})." if apart else ".")
    )


def lambda_verdict(metrics_by_lam: Mapping[float, Mapping[str, float] | None], scale: str, noise: Noise | None) -> str:
    """Whether our class-mean runs at ``scale`` trade clean accuracy for robustness as λ grows, as
    the paper's Figure 5 does, from the smallest to the largest λ > 0 that has a run. A change or a
    peak within ``noise`` is not read as one; without a measured noise, none is read."""
    done = {lam: m for lam, m in sorted(metrics_by_lam.items()) if lam > 0 and m}
    # A model near chance is no evidence either way: its λ is left out of the trend.
    near_chance = [lam for lam, m in done.items() if noise is not None and not _fits(m, noise)]
    done = {lam: m for lam, m in done.items() if lam not in near_chance}
    left_out = (
        f" λ = {listed([f'{lam:g}' for lam in near_chance])} fit{'s' if len(near_chance) == 1 else ''} its labels "
        f"too poorly to count (clean accuracy not above {FIT_FACTOR:g} × chance by more than its noise), so "
        f"{'it is' if len(near_chance) == 1 else 'they are'} left out."
        if near_chance
        else ""
    )
    if len(done) < 2:
        which = (
            "no class-mean run is complete"
            if not done and not near_chance
            else "fewer than two values of λ have complete runs that fit their labels"
        )
        return f"At the {scale} scale {which}, so there is no trend to read yet." + left_out
    (low, first), *_, (high, last) = done.items()
    changes, agree, unclear, peaks, humps = [], [], [], [], []
    for key, name in METRIC_COLUMNS:
        changes.append(f"{name} {percent(first[key])} → {percent(last[key])}")
        if noise is None:
            continue
        direction = compare(noise, key, last, first)
        if direction == LAMBDA_TREND[key]:
            agree.append(name)
        elif direction == 0:
            unclear.append(name)
        # The ends alone would hide a robust accuracy that peaks in between and falls again.
        best = max(done, key=lambda lam: done[lam][key])
        if LAMBDA_TREND[key] > 0 and best != high:
            if compare(noise, key, done[best], last) > 0:
                peaks.append(f"{name} peaks at λ = {best:g} ({percent(done[best][key])})")
            else:
                humps.append((name, f"{name} {percent(done[best][key])} at λ = {best:g}"))
    span = f"At the {scale} scale, from λ = {low:g} to λ = {high:g} ({len(done)} values that fit their labels): "
    text = span + ", ".join(changes) + "." + left_out
    if noise is None:
        return text + f" No seed spread has been measured at the {scale} scale, so no change is read as a trend."
    if peaks:
        text += " Robustness does not grow all the way: " + ", ".join(peaks) + ", beyond the noise."
    if humps:
        names = listed([name for name, _ in humps])
        text += (
            f" The highest {names} {'accuracy lies' if len(humps) == 1 else 'accuracies lie'} between the ends ("
            + "; ".join(words for _, words in humps)
            + "), above the largest λ's by less than the noise."
        )
    if len(agree) == len(METRIC_COLUMNS):
        return text + " End to end, clean accuracy falls and robustness rises, the trade of the paper's Figure 5."
    if unclear:
        text += f" The change in {', '.join(unclear)} is within the noise (seed spreads of {noise.measured_on})."
    against = [name for _, name in METRIC_COLUMNS if name not in agree and name not in unclear]
    if against:
        text += (
            " Unlike the paper's Figure 5, where clean accuracy falls and robustness rises, here the change runs "
            f"the other way for {', '.join(against)}."
        )
    return text


def _fits(metrics: Mapping[str, float], noise: Noise) -> bool:
    """The rule's test of a class-mean run of the λ ablation (Figure 5 is on CIFAR-10): clean accuracy
    above twice chance by more than its noise (the widest seed spread, with which the trend compares
    the same runs, and its sampling error)."""
    clean = Measured.of(metrics, "clean")
    return noise.fits(clean, SPECS["cifar10"].num_classes)


def pag_caveat(run: Any, vanilla: Any, noise: Noise | None) -> str:
    """A row's caveat, in lower case, when its PAG score is stored beside vanilla's against the same
    reference and is not above it beyond the score's seed spread (``noise.alignment``): its robustness
    is then not shown to come with PAG (empty otherwise, including when either score is missing)."""
    if run is None or vanilla is None:
        return ""
    own, base = (chosen_evaluations(r).get(("pag_score", "all")) for r in (run, vanilla))
    if own is None or base is None or own["settings"]["reference"] != base["settings"]["reference"]:
        return ""
    mine, theirs = (e["results"]["gradient_alignment"]["score"] for e in (own, base))
    spread = noise.alignment if noise is not None else None
    if aligned_above(spread, mine, theirs):
        return ""
    return (
        f"its input-gradients are not shown to align better with the adversarially trained reference than "
        f"vanilla's, {mine:.2f} against {theirs:.2f} ({spread_words(spread)}), so its robustness is not shown to "
        "come with perceptually aligned gradients"
    )


def row_caveats(row: str, run: Any, vanilla: Any, ceiling: float | None, noise: Noise | None) -> list[str]:
    """What qualifies a row's verdict, in lower case: the distance ceiling (class mean) and the PAG score."""
    caveats = [distance_ceiling_caveat(row, run.metrics["clean"], ceiling), pag_caveat(run, vanilla, noise)]
    return [caveat for caveat in caveats if caveat]


def distance_ceiling_caveat(row: str, clean: float, ceiling: float | None) -> str:
    """Class mean's caveat, in lower case, when its clean accuracy does not pass the recorded accuracy
    of a classifier that sees only an image's distances to the class means (empty otherwise)."""
    if row != "class_mean" or ceiling is None or clean > ceiling:
        return ""
    return (
        f"its clean accuracy does not exceed the {percent(ceiling)} of a classifier that sees only the distances "
        "to the class means, so its robustness may be that of such a simple classifier"
    )


def k_study_ceiling(
    metrics_by_k: Mapping[int, Mapping[str, float]], ceiling: float | None, other: tuple[str, float] | None = None
) -> str:
    """Whether the class-mean runs of the k study can say anything about k: not while every one of them
    stays under the accuracy a classifier of the distances to the class means reaches, where the
    alignment term has already fixed what the model can do and k has nothing left to change.
    ``other`` names another row and its clean accuracy at the preset's k, said to answer if above."""
    if not metrics_by_k:
        return "No class-mean run of the k study exists yet."
    if ceiling is None:
        return "The distance ceiling of class mean has not been measured, so the class-mean runs cannot be placed."
    clean = {k: m["clean"] for k, m in sorted(metrics_by_k.items())}
    above = [k for k, c in clean.items() if c > ceiling]
    span = f"{percent(min(clean.values()))} to {percent(max(clean.values()))}"
    if not above:
        return (
            f"At every k run ({', '.join(map(str, clean))}) the class-mean model's clean accuracy ({span}) stays at "
            f"or under the {percent(ceiling)} that a classifier of the distances to the class means reaches. Their "
            "accuracy stays within what those distances allow (the trained distance classifier gives a lower bound "
            "on that), so these runs may not show whether k matters for a model that uses more of the image"
            + (
                f"; {other[0]}, at {percent(other[1])} clean, is above that accuracy, and its own k study asks the "
                "question again."
                if other is not None and other[1] > ceiling
                else "."
            )
        )
    return (
        f"With k = {', '.join(map(str, above))} the class-mean model passes the {percent(ceiling)} that a classifier "
        "of the distances to the class means reaches, so those runs can show an effect of k."
    )


def _k_against_preset(
    done: Mapping[int, Mapping[str, float]], preset_k: int, noise: Noise, model: str, row: str
) -> str:
    """Which k differ from the preset's k beyond ``noise``, in which accuracy, and what that says."""
    ours = done[preset_k]
    # Only the preset's k was repeated over seeds. The other k runs differ from those seeds in k alone,
    # so every k of the row is taken to vary over seeds as the row does (as the widest measured where
    # the row has no spread of its own), as in k_study_verdict's comparison with vanilla.
    sides = {
        k: {heading: side for key, heading in METRIC_COLUMNS if (side := compare(noise, key, m, ours, rows=(row, row)))}
        for k, m in done.items()
        if k != preset_k
    }
    apart = [
        f"k = {k} is {direction} k = {preset_k} in {listed(headings)} accuracy"
        for k, by_metric in sides.items()
        for direction, headings in (
            ("above", [h for h, side in by_metric.items() if side > 0]),
            ("below", [h for h, side in by_metric.items() if side < 0]),
        )
        if headings
    ]
    moved = [heading for _, heading in METRIC_COLUMNS if any(heading in by_metric for by_metric in sides.values())]
    kept = [heading for _, heading in METRIC_COLUMNS if heading not in moved]
    judged_with = (
        f"Each k is one run of one seed, taken to vary over seeds as the {model} model does at k = {preset_k}, "
        f"whose spread {noise.seeds[row]} seeds measure (the runs differ in k alone). Judged with that spread, "
        if row in noise.own
        else f"Judged with the widest seed spread measured ({noise.widest_words()}), "
    )
    return judged_with + (
        f"beyond the noise {listed(apart)}, so at this scale k moves {listed(moved)} accuracy"
        + (f" but not {' or '.join(kept)} accuracy" if kept else "")
        + " (one seed per k)."
        if apart
        else f"no k differs from k = {preset_k} beyond the noise in clean, ℓ∞ or ℓ2 accuracy, so these "
        "runs do not show k mattering at this scale."
    )


def k_study_verdict(
    runs: dict[int, Any],
    vanilla: Any,
    preset_k: int,
    num_classes: int,
    noise: Noise | None,
    model: str = "class-mean",
    row: str = "",
) -> str:
    """Whether the preset's k changes what the ``model`` runs (of the rule's ``row``) say, from the
    stored runs only; "more robust" means fitting the labels and beating vanilla and chance under PGD-20
    in both threat models, and it and a difference between two k are judged beyond ``noise`` (not
    without it)."""
    done = {k: run.metrics for k, run in runs.items() if run is not None and run.metrics}
    if preset_k not in done or num_classes not in done:
        pending = (
            f"For the {model} model the comparison needs the runs with k = {preset_k} (the preset) and "
            f"k = {num_classes} (the full sum of "
            f"Eq. (1)); {len(done)} of the {len(runs)} runs exist, so there is no verdict yet."
        )
        others = [k for k in sorted(done) if k != preset_k]
        if preset_k not in done or not others:
            return pending
        # Until the full sum lands, say how far the finished ks are from the preset's, without judging.
        ours = done[preset_k]
        gaps = "; ".join(f"k = {k}: {point_differences(done[k], ours)}" for k in others)
        return f"{pending} So far, the differences from k = {preset_k} in clean, ℓ∞ and ℓ2 accuracy (points): {gaps}."
    ours, full = done[preset_k], done[num_classes]
    text = [
        f"With k = {preset_k} the {model} model reaches {percent(ours['clean'])} clean, {percent(ours['linf'])} "
        f"ℓ∞ and {percent(ours['l2'])} ℓ2; with the full sum, {percent(full['clean'])}, {percent(full['linf'])} and "
        f"{percent(full['l2'])} (differences of {point_differences(ours, full)} points)."
    ]
    if len(done) > 2:
        spans = ", ".join(
            f"{shown_points(max(m[key] for m in done.values()), min(m[key] for m in done.values())):.1f}"
            for key, _ in METRIC_COLUMNS
        )
        text.append(f"Over all {len(done)} values of k (one seed each), clean, ℓ∞ and ℓ2 accuracy span {spans} points.")
    if noise is not None:
        text.append(_k_against_preset(done, preset_k, noise, model, row))
    ours_cost, full_cost = seconds_per_epoch(runs[preset_k]), seconds_per_epoch(runs[num_classes])
    if ours_cost and full_cost:
        # Epoch times say what k costs only when both runs trained on the same kind of device.
        same_device = training_devices(runs[preset_k]) == training_devices(runs[num_classes])
        text.append(
            f"An epoch took {ours_cost:.0f} s with k = {preset_k} and {full_cost:.0f} s with the full sum, "
            + (
                f"{full_cost / ours_cost:.1f} times as long."
                if same_device
                else "but on different devices, so the ratio does not measure the price of k."
            )
        )
    if vanilla is not None and vanilla.metrics and noise is None:
        text.append("No seed spread has been measured at this scale, so the runs are not ranked against vanilla.")
    elif vanilla is not None and vanilla.metrics:
        base = vanilla.metrics

        def more_robust(m: Mapping[str, float]) -> bool:
            # The rule's chance tests too: a k whose model hardly fits its labels, or keeps no more than a
            # constant classifier, is not more robust however far above vanilla it lies.
            measured = {key: Measured.of(m, key, row) for key in ("clean", *THREAT_METRICS)}
            return noise.fits(measured["clean"], num_classes) and all(
                noise.above_chance(key, measured[key], num_classes)
                and compare(noise, key, m, base, rows=(row, "vanilla")) > 0
                for key in THREAT_METRICS
            )

        robust = {k: more_robust(m) for k, m in done.items()}
        same = len(set(robust.values())) == 1
        more = [str(k) for k, is_more in sorted(robust.items()) if is_more]
        text.append(
            f"Against the vanilla model of the same scale ({percent(base['linf'])} ℓ∞, {percent(base['l2'])} ℓ2), the "
            f"{model} model is more robust than vanilla and than chance beyond the noise under PGD-20 in both threat "
            "models, fitting its labels, for "
            f"k = {', '.join(more) or 'none'} (PGD-20 only: the stronger attacks and the checklist are in the "
            "CIFAR-10 chapter)"
            + (
                f", so the preset's k = {preset_k} does not change that conclusion."
                if same
                else f", so the conclusion depends on k and the preset's k = {preset_k} must be read with care."
            )
        )
    return " ".join(text)


def curves_reading(runs: Mapping[str, Any]) -> str:
    """What the training curves show: where vanilla and the other runs end, and whether clean accuracy
    still moved over the last quarter of training (a schedule too short shows as a curve still rising)."""
    done = {label: run for label, run in runs.items() if run is not None and run.history}
    if not done:
        return "No run has a training history yet."
    ends, moving = {}, []
    for label, run in done.items():
        accuracy = [h["test_accuracy"] for h in run.history]
        ends[label] = accuracy[-1]
        # The last quarter of n epochs runs from the accuracy before it to the last: n + 1 points.
        quarter = accuracy[-(max(1, len(accuracy) // 4) + 1) :]
        if quarter[-1] - quarter[0] > 0.01:
            moving.append(label)
    best, worst = max(ends, key=ends.get), min(ends, key=ends.get)
    text = f"Clean test accuracy ends between {percent(ends[worst])} ({worst}) and {percent(ends[best])} ({best}). "
    if moving:
        return text + f"Over the last quarter of training it still rises by more than a point for {', '.join(moving)}."
    return text + (
        "No curve rises by more than a point over the last quarter of training, which runs at the schedule's "
        "smallest learning rate: flat ends there do not show what a longer schedule would reach."
    )


def pictures_reading(runs: Mapping[str, Any], num_classes: int) -> str:
    """The PAG pictures' one number: how confidently an adversarially trained reference sees each
    run's targeted pictures as their target class (the PAG score of the gradient-masking chapter).
    Only runs scored against the same reference are ranked (the one most of them share); a run
    distilled from that reference (RIGD with it as teacher) is named as such."""
    scored: dict[str, tuple[float, str, str]] = {}
    for label, run in runs.items():
        entry = chosen_evaluations(run).get(("pag_score", "all")) if run is not None else None
        if entry is not None:
            reference = entry["settings"].get("reference", "")
            teacher = (getattr(run, "params", None) or {}).get("teacher", "")
            scored[label] = (entry["results"]["targeted_confidence"]["score"], reference, teacher)
    if not scored:
        return "No run's pictures have been scored yet, so they can only be judged by eye."
    shared = shared_reference({label: {"reference": reference} for label, (_, reference, _) in scored.items()})
    ranked = sorted((label for label, s in scored.items() if s[1] == shared), key=lambda n: -scored[n][0])

    def named(label: str) -> str:
        distilled = " (distilled from the reference itself)" if shared and scored[label][2] == shared else ""
        return f"{label}{distilled} {percent(scored[label][0])}"

    text = (
        "The reference, an adversarially trained model, gives the target class of these pictures a mean "
        f"probability of: {', '.join(named(label) for label in ranked)} (a constant guess gives "
        f"{percent(chance(num_classes), digits=0)}). This is the targeted confidence that the gradient-masking chapter "
        "reports for every run; the list runs from the highest, but no seed spread of this confidence is measured, "
        "so it does not rank runs a few points apart."
    )
    others = [label for label in scored if label not in ranked]
    if others:
        one = len(others) == 1
        text += (
            f" {listed(others)} {'was' if one else 'were'} scored against another reference and "
            f"{'is' if one else 'are'} not ranked with them."
        )
    return text


def k_curve_reading(metrics_by_k: Mapping[int, Mapping[str, float]], epoch_seconds: Mapping[int, float | None]) -> str:
    """What the k-study figure shows: what the largest k changes against the smallest, in accuracy and in
    the time of an epoch, and whether any accuracy rises with every larger k."""
    if len(metrics_by_k) < 2:
        return "Fewer than two values of k have complete runs, so the figure shows no trend yet."
    ordered = sorted(metrics_by_k)
    low, high = ordered[0], ordered[-1]
    clean, linf, l2 = (
        signed_points(shown_points(metrics_by_k[high][key], metrics_by_k[low][key])) for key, _ in METRIC_COLUMNS
    )
    sentence = (
        f"From k = {low} to k = {high}, the clean, ℓ∞ and ℓ2 accuracies change by {clean}, {linf} and {l2} points"
    )
    if epoch_seconds.get(low) and epoch_seconds.get(high):
        sentence += f", while an epoch takes {epoch_seconds[high] / epoch_seconds[low]:.1f} times as long"
    rising = [
        name
        for key, name in METRIC_COLUMNS
        if all(metrics_by_k[a][key] < metrics_by_k[b][key] for a, b in zip(ordered, ordered[1:]))
    ]
    caveat = "(one seed each, read here without the seed spread)"
    if not rising:
        return (
            sentence
            + f"; no accuracy rises with every larger k, so these runs {caveat} do not show a larger k buying accuracy."
        )
    if len(rising) == len(METRIC_COLUMNS):
        return sentence + f"; every accuracy rises with every larger k {caveat}."
    return sentence + f"; of the three, only {' and '.join(rising)} accuracy rises with every larger k {caveat}."


def toy_alignment_reading(scores: Mapping[str, Sequence[float]], robust: Mapping[str, Sequence[float]]) -> str:
    """Whether the toy's PAG score tells robust models apart within one training method, or only the
    two methods apart (``scores`` and ``robust`` per method, ``vanilla`` and ``pag``, one per seed),
    read from the rank correlations' bootstrap intervals."""
    above = sum(s > max(scores["vanilla"]) for s in scores["pag"])
    sentence = f"{above} of the {len(scores['pag'])} PAG models score higher than the best-aligned vanilla model."
    overall = rank_correlation([*scores["vanilla"], *scores["pag"]], [*robust["vanilla"], *robust["pag"]])
    within = {method: rank_correlation(scores[method], robust[method]) for method in ("vanilla", "pag")}
    if math.isnan(overall.rho):
        return sentence + " The score or the PGD accuracy is constant over all models: no rank correlation."
    undefined = [method for method, c in within.items() if math.isnan(c.rho)]
    if undefined:  # e.g. every vanilla model at 0 % PGD accuracy: nothing to rank within that method
        defined = [f"{c} for {method}" for method, c in within.items() if not math.isnan(c.rho)]
        return sentence + (
            f" Over all models, score and PGD accuracy have a rank correlation of {overall}; within "
            f"{' and '.join(undefined)} one of them is constant"
            + (f", and within the other it is {defined[0]}." if defined else ".")
        )
    sentence += (
        f" Within one method, score and PGD accuracy have a rank correlation of {within['vanilla']} for vanilla and "
        f"{within['pag']} for PAG, against {overall} over all models: "
    )
    if overall.low > max(c.high for c in within.values()):
        return sentence + (
            "the correlation comes from the gap between the two methods, and within one method the score ranks "
            "models less well."
        )
    # Only an interval above 0 says the better aligned models are the more robust ones.
    ranked = [method for method, c in within.items() if c.excludes_zero and c.rho > 0]
    if not ranked:
        return sentence + "within one method no interval lies above 0, so the score does not rank models trained alike."
    if len(ranked) == len(within):
        return sentence + "the score ranks models trained the same way too."
    (other,) = [method for method in within if method not in ranked]
    names = {"vanilla": "vanilla", "pag": "PAG"}
    return sentence + (
        f"the score ranks the {names[ranked[0]]} models among themselves (the interval lies above 0), but for the "
        f"{names[other]} models it does not, so it does not tell them apart."
    )


def robust_numbers(run: Any) -> dict[tuple[str, str], Measured]:
    """A run's robust accuracies keyed by (attack, norm): PGD-20 on its whole test set, and every
    stronger attack stored for it on its subset."""
    metrics = run.metrics
    numbers = {("pgd20", norm): Measured.of(metrics, norm) for norm in THREAT_METRICS}
    for (name, norm), entry in chosen_evaluations(run).items():
        if name in ("pgd100", "autoattack"):
            numbers[(name, norm)] = Measured.attacked(entry)
    return numbers


def judge_table(
    runs: Mapping[str, Any], noise: Noise, num_classes: int, rows: Sequence[str] = PAG_ROWS
) -> dict[str, Judgement]:
    """The rule applied to every row of ``rows`` (a table's PAG rows, keyed as in ``runs``) that has a
    run, against the table's vanilla run (empty without one)."""
    vanilla = runs.get("vanilla")
    if vanilla is None or not vanilla.metrics:
        return {}
    baseline = robust_numbers(vanilla)
    judged = {}
    for row in rows:
        run = runs.get(row)
        if run is None or not run.metrics:
            continue
        judged[row] = judge(
            row,
            run.metrics["clean"],
            robust_numbers(run),
            baseline,
            noise=noise,
            num_classes=num_classes,
            failed_checks=failed_checks(chosen_evaluations(run)),
        )
    return judged
