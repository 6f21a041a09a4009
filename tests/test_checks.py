"""The gradient-masking checklist passes a normal model and flags models that mask gradients by construction."""

import pytest
import torch
from tiny_models import QuantisedInput, SaturatedSoftmax, trained_image_model

from pagcore.base.validation import ConfigError
from pagcore.evaluate.checklist import ChecklistConfig, check_eps_curve, gradient_masking_checklist, tally
from pagcore.paper.attacks import PGD

# Reduced budgets: seconds on a CPU. Radii: L2 1.0 breaks the tiny normal model under PGD.
FAST = ChecklistConfig(
    curve_steps=10, baseline_steps=10, strong_steps=20, strong_restarts=2, targeted_iterations=20, square_queries=300
)
NORM, EPS = "l2", 1.0


def by_name(results):
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def normal():
    return trained_image_model(seed=0)


@pytest.fixture(scope="module")
def source():
    """An independently trained model of the same data: the transfer source."""
    return trained_image_model(seed=1)[0]


def test_a_normal_model_passes_every_check(normal, source):
    model, x, y = normal
    results = by_name(gradient_masking_checklist(model, x, y, norm=NORM, eps=EPS, source=source, settings=FAST))
    assert tally(results.values())["failed"] == [], {n: r.numbers for n, r in results.items() if not r.passed}
    curve = results["eps_monotone"].numbers["accuracy"]
    assert curve[0] == 1.0 and curve[-1] == 0.0  # clean accuracy first, nothing left at the largest radius
    assert results["gradients"].numbers["zero_fraction"] == 0.0


@pytest.mark.parametrize(
    ("masking", "expected"),
    [
        # Rounding blinds every gradient attack: the black-box and transfer attacks see through it.
        (QuantisedInput, {"eps_reaches_zero", "black_box", "transfer", "gradients"}),
        # A saturated softmax blinds cross-entropy: no radius breaks it, and its gradients are zero.
        (SaturatedSoftmax, {"eps_reaches_zero", "gradients"}),
    ],
)
def test_models_that_mask_gradients_are_flagged(normal, masking, expected):
    model, x, y = normal
    masked = masking(model).eval()
    with torch.no_grad():
        assert (masked(x).argmax(1) == y).float().mean() >= 0.9  # the wrapper keeps the model's decisions
    # The unmasked model is the natural transfer source: same decisions, working gradients.
    results = by_name(gradient_masking_checklist(masked, x, y, norm=NORM, eps=EPS, source=model, settings=FAST))
    failed = set(tally(results.values())["failed"])
    assert expected <= failed, {n: r.numbers for n, r in results.items()}
    assert results["gradients"].numbers["zero_fraction"] >= 0.9


def test_more_iterations_check_fails_when_the_baseline_attack_is_weak(normal, source):
    """With PGD-1 as the baseline, PGD-20 x 2 restarts is far stronger: the check must say so."""
    model, x, y = normal
    weak = ChecklistConfig(
        curve_steps=5, baseline_steps=1, strong_steps=20, strong_restarts=2, targeted_iterations=5, square_queries=50
    )
    results = by_name(gradient_masking_checklist(model, x, y, norm=NORM, eps=0.5, source=source, settings=weak))
    numbers = results["more_iterations"].numbers
    assert results["more_iterations"].passed is False
    assert numbers["baseline"] - numbers["strong"] > 0.1


def test_the_strongest_white_box_attack_sees_through_a_saturated_softmax(normal):
    """Cross-entropy PGD is blind on a saturated softmax; targeted APGD's DLR margin is not, so the
    checklist's strongest white-box attack is at least as strong as AutoAttack's targeted APGD."""
    model, x, y = normal
    masked = SaturatedSoftmax(model).eval()
    results = by_name(gradient_masking_checklist(masked, x, y, norm=NORM, eps=EPS, source=model, settings=FAST))
    numbers = results["more_iterations"].numbers
    assert numbers["strong"] >= 0.9  # PGD-20 x 2 restarts finds nothing
    assert numbers["white_box"] <= numbers["strong"] - 0.5  # targeted APGD breaks most of what PGD left
    # More of the same blind PGD finds nothing more: check 3 asks whether PGD converged, not which loss
    # is stronger. The black-box and transfer checks compare with the strongest attack.
    assert results["more_iterations"].passed is True
    assert results["black_box"].numbers["white_box"] == numbers["white_box"]
    assert results["transfer"].numbers["white_box"] == numbers["white_box"]


def test_a_black_box_attack_beating_pgd_but_not_targeted_apgd_is_no_sign_of_masking(normal):
    """Against PGD alone, Square would look stronger than the white-box attack on a saturated softmax;
    against the strongest white-box attack (targeted APGD on PGD's survivors) it is not."""
    model, x, y = normal
    masked = SaturatedSoftmax(model).eval()
    results = by_name(gradient_masking_checklist(masked, x, y, norm=NORM, eps=EPS, source=model, settings=FAST))
    black_box = results["black_box"].numbers
    assert black_box["square"] < results["more_iterations"].numbers["strong"] - FAST.black_box_tolerance
    assert results["black_box"].passed is True


def test_the_checks_references_are_part_of_what_is_stored():
    references = ChecklistConfig().settings()["references"]
    assert references["more_iterations"] == "the strong PGD against the baseline PGD"
    assert references["black_box"].endswith("the strongest white-box attack")


def test_non_monotone_curve_is_flagged(normal):
    """Feed the curve check an attack that gets weaker as eps grows: both curve checks must fail."""
    model, x, y = normal

    def weaker_with_eps(radius):
        return PGD.paper_real_data("l2", max(1.0 - radius / 8, 0.01), 10)

    monotone, zero = check_eps_curve(model, x, y, "l2", 1.0, FAST, attack_at=weaker_with_eps)
    assert monotone.passed is False and monotone.numbers["largest_rise"] > 0.01
    assert zero.passed is False


def test_transfer_check_is_not_run_without_a_source(normal):
    model, x, y = normal
    results = by_name(gradient_masking_checklist(model, x[:8], y[:8], norm=NORM, eps=EPS, settings=FAST))
    assert results["transfer"].passed is None and "transfer" in tally(results.values())["not_run"]


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="eps_multipliers"):
        ChecklistConfig(eps_multipliers=(1.0, 0.5))
    with pytest.raises(ConfigError, match="strong_restarts"):
        ChecklistConfig(strong_restarts=0)
    with pytest.raises(ConfigError, match="targeted_iterations"):
        ChecklistConfig(targeted_iterations=0)
