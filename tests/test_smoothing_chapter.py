"""The randomized-smoothing chapter reads its verdict from stored certificates and PAG scores."""

from __future__ import annotations

import json

import pytest

from pagcore.book import smoothing
from pagcore.book.evidence import AlignmentSpread
from pagcore.evaluate.final import PICTURE_NORM
from pagcore.store.runs import RunStore

REFERENCE = "cifar10-cpu-adversarial-l2"


class Reference:
    name = REFERENCE


def evaluation(run, name: str, settings: dict, results: dict) -> None:
    """Store one evaluation as the evaluation code does, with what the chapter reads of it."""
    settings = {"budgets": "real", "subset": {"size": results.get("images", 100)}, **settings}
    entry = {"name": name, "settings": settings, "results": results}
    (run.path / "evaluations").mkdir(parents=True, exist_ok=True)
    (run.path / "evaluations" / f"{name}-{len(list((run.path / 'evaluations').glob('*')))}.json").write_text(
        json.dumps(entry)
    )


def pag_score(run, alignment: float, smoothed: bool = False) -> None:
    extra = {"smoothed": {"sigma": 0.25, "draws": 8}} if smoothed else {}
    results = {
        "gradient_alignment": {"score": alignment, "images": 100},
        "targeted_confidence": {"score": 0.5, "pairs": 180},
    }
    evaluation(run, "pag_score", {"reference": REFERENCE, **extra}, results)


def certificate(run, at_half: float, images: int = 100, clean: float | None = None) -> None:
    certified = {f"{r:g}": at_half for r in (0.0, 0.25, 0.5, 0.75, 1.0)}
    certified["0"] = at_half if clean is None else clean
    results = {"certified_accuracy": certified, "abstained": 0.0, "images": images}
    evaluation(run, "certify", {"n": 10_000, "sigma": 0.25}, results)


@pytest.fixture
def stored(tmp_path):
    store = RunStore(tmp_path)
    noisy = store.create(
        "noise", {"dataset": "cifar10", "objective": "gaussian_noise", "noise_sigma": 0.25, "epochs": 20}
    )
    vanilla = store.create("vanilla", {"dataset": "cifar10", "objective": "cross_entropy", "scale": "cpu"})
    pag_score(vanilla, 0.10)
    return noisy, vanilla


SPREAD = AlignmentSpread("Vanilla", 0.02, 3)
"""A PAG score's seed spread: two scores differ when more than 2 · √2 · 0.02 ≈ 0.057 apart."""


def verdict(noisy, vanilla, spread: AlignmentSpread | None = SPREAD) -> str:
    scores = smoothing.alignment_scores({0.25: noisy}, {"Vanilla": vanilla}, Reference())
    return smoothing.verdict({0.25: noisy}, scores, "Vanilla", num_classes=10, scale="cpu", spread=spread)


def test_the_claim_needs_a_certificate_beyond_chance_and_gradients_aligned_beyond_the_seed_spread(stored):
    noisy, vanilla = stored
    assert "no certificate, no PAG score of its smoothed classifier yet" in verdict(noisy, vanilla)
    certificate(noisy, 0.40)
    pag_score(noisy, 0.30, smoothed=True)
    supported = verdict(noisy, vanilla)
    assert "certifies 40.0% of 100 test images at ℓ2 radius 0.5 (beyond the 10.0%" in supported
    assert "alignment is 0.30 against vanilla's 0.10" in supported
    assert "the runs support Kaur, Cohen & Lipton's claim" in supported
    assert "a gap must exceed 0.057, the margin the score's seed spread sets" in supported
    assert "Over its unsmoothed base classifier" not in supported  # the base is not scored yet
    # With the base scored, the verdict says how much of the alignment the smoothing adds to it.
    pag_score(noisy, 0.20)
    assert "against vanilla's 0.10 and its unsmoothed base classifier's 0.20" in verdict(noisy, vanilla)
    assert verdict(noisy, vanilla).endswith(
        "Over its unsmoothed base classifier, smoothing adds +0.100 at σ = 0.25 (beyond the 0.057 margin)."
    )
    # Without a measured seed spread no alignment gap is read, however wide: the claim waits.
    unmeasured = verdict(noisy, vanilla, spread=None)
    assert unmeasured.endswith(
        "claim is not judged yet: the score's spread over seeds is not measured, so no gap is read."
    )


def test_alignment_the_base_classifier_already_has_is_not_credited_to_smoothing(stored):
    noisy, vanilla = stored
    certificate(noisy, 0.40)
    pag_score(noisy, 0.27)  # the base classifier, 0.03 below its smoothed classifier: within 0.057
    pag_score(noisy, 0.30, smoothed=True)
    assert verdict(noisy, vanilla).endswith(
        "smoothing adds +0.030 at σ = 0.25 (within the 0.057 margin): the aligned gradients come with training on "
        "Gaussian noise more than with the smoothing itself."
    )


def test_a_smoothed_classifier_near_chance_when_clean_is_no_evidence(stored):
    noisy, vanilla = stored
    certificate(noisy, 0.40, clean=0.25)  # 25 % clean on 100 images: not above 20 % by twice 4.3 points
    pag_score(noisy, 0.30, smoothed=True)
    assert "do not support the claim" in verdict(noisy, vanilla)


@pytest.mark.parametrize(("at_half", "alignment"), [(0.15, 0.30), (0.40, 0.14)])
def test_either_half_missing_leaves_the_claim_unsupported(stored, at_half, alignment):
    noisy, vanilla = stored
    # 15 % of 100 images is within twice chance's sampling error (3 points) of 10 %; 0.14 is within 0.057 of 0.10.
    certificate(noisy, at_half)
    pag_score(noisy, alignment, smoothed=True)
    assert "do not support the claim" in verdict(noisy, vanilla)


def test_the_base_classifier_and_its_smoothed_classifier_are_scored_apart(stored):
    noisy, vanilla = stored
    pag_score(noisy, 0.20)
    pag_score(noisy, 0.30, smoothed=True)
    scores = smoothing.alignment_scores({0.25: noisy}, {"Vanilla": vanilla}, Reference())
    assert {label: s["alignment"] for label, s in scores.items()} == {
        "Vanilla": 0.10,
        "σ = 0.25, base": 0.20,
        "σ = 0.25, smoothed (m = 8)": 0.30,
    }
    table = smoothing.alignment_table(scores)
    assert "| σ = 0.25, smoothed (m = 8) | 0.30 | 50.0% | 100 | 180 |" in table
    partly = smoothing.status({0.25: noisy, 0.5: None}, "cpu")
    assert "1 of the 2 base classifiers (σ = 0.25) have stored runs" in partly and "certified: 0 of 1" in partly
    certificate(noisy, 0.40)
    smoothed = {"smoothed": {"sigma": 0.25, "draws": 8}}
    evaluation(noisy, "pgd20", {**smoothed, "norm": "l2"}, {"robust": 0.55, "images": 100})
    evaluation(noisy, "pictures", {**smoothed, "norm": PICTURE_NORM}, {"folder": "pictures"})
    assert smoothing.status({0.25: noisy}, "cpu") == (
        "The base classifier (σ = 0.25) is stored at the cpu scale, trained for 20 epochs, and certified, attacked "
        "through smoothing, scored and pictured."
    )
    assert "shows no numbers" in smoothing.status({0.25: None}, "cpu")


def test_scores_against_another_reference_are_not_compared(stored):
    noisy, vanilla = stored
    certificate(noisy, 0.40)
    pag_score(noisy, 0.30, smoothed=True)

    class Other:
        name = "cifar10-cpu-adversarial-linf"

    scores = smoothing.alignment_scores({0.25: noisy}, {"Vanilla": vanilla}, Other())
    assert scores == {}
    judged = smoothing.verdict({0.25: noisy}, scores, "Vanilla", num_classes=10, scale="cpu", spread=SPREAD)
    assert "no PAG score of its smoothed classifier, no PAG score of vanilla against the same reference" in judged
    assert "is not judged yet" in judged


def test_the_ceiling_of_certified_radii_follows_the_draws():
    # All n = 10,000 votes agreeing bound p_A by 0.001^(1/10,000); Φ⁻¹ of that is 3.1986.
    assert smoothing.radius_ceiling(0.25, 10_000, 0.001) == pytest.approx(0.25 * 3.1986, abs=1e-3)
    sentence = smoothing.ceiling_sentence({0.5: None}, 100, 10_000, 0.001)
    assert "n0 = 100 draws" in sentence and "1.60 for σ = 0.5 (n = 10,000, α = 0.001)" in sentence


def test_the_pictures_reading_names_only_the_smoothed_rows_that_are_stored(stored):
    noisy, _ = stored
    assert smoothing.pictures_reading({0.25: noisy}, shown=False) == "There are no pictures to read yet."
    assert "base classifiers only" in smoothing.pictures_reading({0.25: noisy, 0.5: None}, shown=True)
    smoothed = {"smoothed": {"sigma": 0.25, "draws": 8}, "norm": "l2"}
    evaluation(noisy, "pictures", smoothed, {"folder": "artifacts/pictures-smoothed", "images": 4})
    reading = smoothing.pictures_reading({0.25: noisy, 0.5: None}, shown=True)
    assert "The smoothed rows (σ = 0.25)" in reading and "0.5" not in reading
    # What the pictures show, measured by the reference's confidence in the target class.
    scores = {
        "Vanilla": {"confidence": 0.085},
        "σ = 0.25, base": {"confidence": 0.5},
        "σ = 0.25, smoothed (m = 8)": {"confidence": 0.949},
    }
    measured = smoothing.pictures_reading({0.25: noisy}, True, scores, "Vanilla")
    assert "gives the target class 94.9% on the smoothed σ = 0.25 pictures, against 8.5% on vanilla's" in measured
    assert "gives the target class" not in smoothing.pictures_reading({0.25: noisy}, True, scores, "no such row")


def test_the_alignment_plot_places_smoothed_classifiers_among_the_models_scored_against_one_reference(stored):
    noisy, vanilla = stored
    store = RunStore(noisy.path.parent)
    teacher = store.create(REFERENCE, {"dataset": "cifar10", "objective": "adversarial"})
    other = store.create("other-reference", {"dataset": "cifar10", "objective": "pag"})
    for run, l2 in ((noisy, 0.30), (vanilla, 0.01), (teacher, 0.60), (other, 0.20)):
        run.write_json("metrics.json", {"clean": 0.8, "linf": 0.1, "l2": l2})
    pag_score(noisy, 0.20)
    pag_score(teacher, 1.0)  # the reference against itself: no point
    evaluation(other, "pag_score", {"reference": "elsewhere"}, {"gradient_alignment": {"score": 0.9}})
    assert smoothing.alignment_reading([vanilla], {0.25: noisy}, Reference(), SPREAD).startswith(
        "The plot needs a scored smoothed classifier"
    )
    pag_score(noisy, 0.30, smoothed=True)
    smoothed_attack = {"smoothed": {"sigma": 0.25, "draws": 8}, "norm": "l2"}
    evaluation(noisy, "pgd20", smoothed_attack, {"robust": 0.55, "images": 100})

    groups = smoothing.alignment_groups([noisy, vanilla, teacher, other], {0.25: noisy}, Reference())
    assert groups == {
        "vanilla": [(0.10, 0.01)],
        "noise-trained base classifiers": [(0.20, 0.30)],
        "their smoothed classifiers": [(0.30, 0.55)],
    }
    reading = smoothing.alignment_reading([noisy, vanilla, teacher, other], {0.25: noisy}, Reference(), SPREAD)
    assert (
        "alignment is 0.30 for σ = 0.25 (above 1 of the other model by more than 0.057, the margin the score's "
        "seed spread sets)" in reading
    )
    unmeasured = smoothing.alignment_reading([noisy, vanilla, teacher, other], {0.25: noisy}, Reference(), None)
    assert "0.30 for σ = 0.25 (the score's spread over seeds is not measured, so no gap is read)" in unmeasured
    assert "the best aligned other model, CIFAR-10 vanilla (cpu), reaches 0.10" in reading
    assert smoothing.alignment_groups([noisy], {0.25: noisy}, None) == {}

    student = store.create(
        "student", {"dataset": "cifar10", "objective": "pag", "source": "rigd", "teacher": REFERENCE, "scale": "cpu"}
    )
    student.write_json("metrics.json", {"clean": 0.8, "linf": 0.1, "l2": 0.4})
    pag_score(student, 0.50)
    reading = smoothing.alignment_reading([vanilla, student], {0.25: noisy}, Reference(), SPREAD)
    assert "above 1 of the 2 other models" in reading
    assert "CIFAR-10 RIGD (cpu), distilled from the reference itself, reaches 0.50" in reading


def test_the_pictures_caption_gives_the_draws_behind_each_smoothed_row(stored):
    noisy, _ = stored
    assert smoothing.pictures_draws({0.25: noisy}) == "no noise draws, since no smoothed picture is stored yet"
    smoothed = {"smoothed": {"sigma": 0.25, "draws": 8}, "norm": "l2"}
    evaluation(noisy, "pictures", smoothed, {"folder": "artifacts/pictures-smoothed", "images": 4})
    assert smoothing.pictures_draws({0.25: noisy, 0.5: None}) == "m = 8 noise draws per step"


def test_the_smoothed_classifiers_clean_accuracy_is_read_against_its_base_with_the_sampling_error(stored):
    noisy, _ = stored
    assert smoothing.robustness_reading({0.25: noisy}) == "No smoothed classifier has been attacked yet."
    noisy.write_json("metrics.json", {"clean": 0.62, "linf": 0.2, "l2": 0.4, "test_images": 10_000})
    noisy.write_json("record.json", {"status": "complete", "kind": "real"})
    attacked = {"clean": 0.81, "robust": 0.3, "images": 100}
    evaluation(noisy, "pgd20", {"norm": "l2", "smoothed": {"sigma": 0.25, "draws": 8}}, attacked)
    reading = smoothing.robustness_reading({0.25: noisy})
    # Twice the combined sampling error of 62% on 10,000 and 81% on 100 images: 7.9 points.
    assert "19.0 points above its base on clean images (100 images; beyond twice the sampling error, 7.9" in reading
