"""Randomized smoothing: PREDICT and CERTIFY (Cohen et al., 2019) on classifiers whose vote shares are
known exactly, their statistics against scipy's values, and the soft smoothed classifier's Monte Carlo
log-probabilities and gradients (Salman et al., 2019) against a closed form.

Every model carries a dropout layer that would change its answers in train mode, and is handed over
in train mode: the exact answers show that the functions ran it in eval mode."""

import math
from statistics import NormalDist

import pytest
import torch
from torch import nn

from pagcore.base.validation import ConfigError
from pagcore.paper.smoothing import (
    ABSTAIN,
    SoftSmoothed,
    binomial_p_value,
    certify,
    lower_confidence_bound,
    predict,
    sample_counts,
    smoothed_input_gradients,
    smoothed_log_probabilities,
)

PHI = NormalDist()
ALPHA = 0.001


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Constant(nn.Module):
    """Predicts ``label`` whatever the input."""

    def __init__(self, label: int = 2, num_classes: int = 4):
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.register_buffer("logits", nn.functional.one_hot(torch.tensor(label), num_classes).float())

    def forward(self, x):
        # Dropout zeroes whole rows of logits in train mode, which would turn votes into class 0.
        return self.dropout(self.logits.expand(len(x), -1).clone())


class Threshold(nn.Module):
    """Class 1 iff the first pixel exceeds t; under N(0, σ²) noise, P(class 1) = 1 - Φ((t - x)/σ)."""

    def __init__(self, t: float = 0.5):
        super().__init__()
        self.t, self.dropout = t, nn.Dropout(0.5)

    def forward(self, x):
        v = self.dropout(x.flatten(1)[:, 0])
        return torch.stack([self.t - v, v - self.t], dim=1)


class Probit(nn.Module):
    """Two classes with softmax(logits)_1 = Φ(w·x + b) exactly: logits (log(1 - Φ(z)), log Φ(z))."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w, self.b, self.dropout = nn.Parameter(w), b, nn.Dropout(0.5)

    def forward(self, x):
        z = self.dropout(x).flatten(1) @ self.w + self.b
        return torch.stack([torch.special.log_ndtr(-z), torch.special.log_ndtr(z)], dim=1)


class MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("the arguments should have been rejected before the model ran")


def pixel(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1), value)


# --- the statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,n,expected",  # scipy.stats.binomtest(k, n, 0.5).pvalue, scipy 1.17.1
    [(60, 100, 0.05688793364098089), (7, 10, 0.34375), (3, 20, 0.0025768280029296875), (11, 11, 2**-10)]
    + [(5210, 10000, 2.7824418797091576e-05), (50, 100, 1.0)],
)
def test_binomial_p_value_matches_scipy(k, n, expected):
    assert binomial_p_value(k, n) == pytest.approx(expected, rel=1e-9)
    assert binomial_p_value(n - k, n) == pytest.approx(expected, rel=1e-9)  # two-sided


@pytest.mark.parametrize(
    "k,n,alpha,expected",  # scipy.stats.beta.ppf(alpha, k, n - k + 1), scipy 1.17.1
    [(990, 1000, 0.001, 0.9760361871553114), (9, 10, 0.05, 0.6058366975634952), (1, 50, 0.1, 0.0021049917041368028)]
    + [(500, 1000, 0.01, 0.46277806676099753), (69000, 100000, 0.001, 0.6854627969063026)],
)
def test_lower_confidence_bound_matches_scipy(k, n, alpha, expected):
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, rel=1e-10)


def test_lower_confidence_bound_of_unanimous_and_of_no_votes():
    for n in (1, 10, 1000):
        assert lower_confidence_bound(n, n, ALPHA) == pytest.approx(ALPHA ** (1 / n), rel=1e-14)
    assert lower_confidence_bound(0, 10, ALPHA) == 0.0


# --- PREDICT and CERTIFY ----------------------------------------------------------------------


def test_constant_classifier_is_predicted_and_certified_with_the_unanimous_radius():
    model, x, sigma, n = Constant(label=2), torch.rand(3, 4, 4, generator=seeded(0)), 0.25, 1000
    assert predict(model, x, sigma, n, ALPHA, batch_size=300, generator=seeded(1)) == 2
    label, radius = certify(model, x, sigma, 10, n, ALPHA, batch_size=300, generator=seeded(1))
    # All n votes agree, so p_A's lower bound is alpha^(1/n) and the radius σ Φ⁻¹(alpha^(1/n)).
    assert label == 2 and radius == pytest.approx(sigma * PHI.inv_cdf(ALPHA ** (1 / n)), rel=1e-12)
    assert model.training


def test_too_few_unanimous_votes_abstain():
    model, x = Constant(label=1), torch.zeros(1, 2, 2)
    # PREDICT: the p-value of n agreeing votes is 2 * 2^-n, below 0.001 from n = 11 on.
    assert predict(model, x, 0.5, 10, ALPHA, batch_size=8, generator=seeded(0)) == ABSTAIN
    assert predict(model, x, 0.5, 11, ALPHA, batch_size=8, generator=seeded(0)) == 1
    # CERTIFY: alpha^(1/n) exceeds 1/2 from n = 10 on (log 0.001 / log 0.5 = 9.97).
    assert certify(model, x, 0.5, 1, 9, ALPHA, batch_size=8, generator=seeded(0)) == (ABSTAIN, 0.0)
    assert certify(model, x, 0.5, 1, 10, ALPHA, batch_size=8, generator=seeded(0))[0] == 1


def test_counts_follow_the_known_vote_share_and_are_reproducible():
    model, sigma, n = Threshold(t=0.5), 0.2, 20000
    counts = sample_counts(model, pixel(0.6), sigma, n, batch_size=3000, generator=seeded(0))
    assert counts.dtype == torch.int64 and counts.shape == (2,) and counts.sum() == n
    p = 1 - PHI.cdf((0.5 - 0.6) / sigma)
    assert abs(counts[1] / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    again = sample_counts(model, pixel(0.6), sigma, n, batch_size=3000, generator=seeded(0))
    assert torch.equal(counts, again)
    assert not torch.equal(counts, sample_counts(model, pixel(0.6), sigma, n, batch_size=3000, generator=seeded(1)))
    assert model.training


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("side", [1, -1])
def test_certified_radius_is_below_the_true_one_and_approaches_it(seed, side):
    # x half a σ from the threshold: the top class has p = Φ(0.5), so the true radius is σ/2.
    t, sigma = 0.5, 0.25
    model, x, true_radius = Threshold(t), pixel(t + side * sigma / 2), sigma / 2
    radii = []
    for n in (1000, 100_000):
        label, radius = certify(model, x, sigma, 100, n, ALPHA, batch_size=25_000, generator=seeded(seed))
        assert label == (1 if side > 0 else 0)
        radii.append(radius)
    # The bound is about 3.1 standard errors below p̂, i.e. 0.13 σ (n = 1000) and 0.013 σ (n = 100,000).
    assert 0 < radii[0] < radii[1] < true_radius
    assert true_radius - radii[1] < 0.03 * sigma


@pytest.mark.parametrize("seed", range(5))
def test_a_fifty_fifty_vote_abstains(seed):
    model = Threshold(t=0.5)
    assert predict(model, pixel(0.5), 0.25, 2000, ALPHA, batch_size=1000, generator=seeded(seed)) == ABSTAIN
    assert certify(model, pixel(0.5), 0.25, 100, 2000, ALPHA, batch_size=1000, generator=seeded(seed)) == (
        ABSTAIN,
        0.0,
    )


@pytest.mark.parametrize(
    "sigma,n0,n,alpha,batch_size",
    [(0.0, 10, 10, 0.01, 4), (-0.5, 10, 10, 0.01, 4), (0.5, 0, 10, 0.01, 4), (0.5, 10, 0, 0.01, 4)]
    + [(0.5, 10, 10, 0.0, 4), (0.5, 10, 10, 1.0, 4), (0.5, 10, 10, 1.5, 4), (0.5, 10, 10, True, 4)]
    + [(0.5, 10, 10, 0.01, 0), (math.nan, 10, 10, 0.01, 4)],
)
def test_bad_arguments_are_rejected_before_any_compute(sigma, n0, n, alpha, batch_size):
    x, model = torch.zeros(1, 2, 2), MustNotRun()
    with pytest.raises(ConfigError):
        certify(model, x, sigma, n0, n, alpha, batch_size=batch_size, generator=seeded(0))
    if n0 > 0:
        with pytest.raises(ConfigError):
            predict(model, x, sigma, n, alpha, batch_size=batch_size, generator=seeded(0))


def test_bad_shapes_and_sample_sizes_are_rejected():
    with pytest.raises(ConfigError, match="one image"):
        sample_counts(MustNotRun(), torch.zeros(2, 1, 2, 2), 0.5, 10, batch_size=4, generator=seeded(0))
    for sigma, m in [(0.0, 10), (0.5, 0)]:
        with pytest.raises(ConfigError):
            smoothed_log_probabilities(MustNotRun(), torch.zeros(2, 1, 2, 2), sigma, m, generator=seeded(0))


# --- the soft smoothed classifier -------------------------------------------------------------


def test_monte_carlo_log_probabilities_and_gradients_match_the_probit_closed_form():
    # For z = w·(x + δ) + b with δ ~ N(0, σ² I), E Φ(z) = Φ(s) with s = (w·x + b) / sqrt(1 + σ²|w|²),
    # so log G(x)_1 = log Φ(s), log G(x)_0 = log Φ(-s) and ∇_x log G(x)_1 = φ(s)/Φ(s) w / sqrt(1 + σ²|w|²).
    w, b, sigma, m = torch.tensor([0.8, -0.5, 0.3, 0.6]), -0.2, 0.5, 100_000
    model = Probit(w, b)
    x = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.4, 0.1]]).view(2, 1, 2, 2)
    scale = math.sqrt(1 + sigma**2 * float(w @ w))
    s = (x.flatten(1) @ w + b) / scale
    log_g = torch.stack([torch.special.log_ndtr(-s), torch.special.log_ndtr(s)], dim=1)
    density = torch.exp(-(s**2) / 2) / math.sqrt(2 * math.pi)
    classes = torch.tensor([1, 0])
    sign = torch.where(classes == 1, 1.0, -1.0)
    expected_grads = (sign * density / torch.special.ndtr(sign * s)).view(2, 1) * w / scale

    estimate = smoothed_log_probabilities(model, x, sigma, m, generator=seeded(0))
    grads = smoothed_input_gradients(model, x, classes, sigma, m, generator=seeded(0))
    # At m = 100,000 the Monte Carlo standard error of log G is at most 0.0024 (G_0 of the first image),
    # that of the gradient about 0.2%: the tolerances are some 6 standard errors.
    assert torch.allclose(estimate, log_g, atol=0.015)
    assert torch.allclose(estimate.logsumexp(dim=1), torch.zeros(2), atol=1e-5)  # G sums to one
    assert grads.shape == x.shape and not grads.requires_grad
    assert torch.allclose(grads.flatten(1), expected_grads, rtol=0.015, atol=1e-3)
    assert model.training and model.w.grad is None


def test_soft_estimates_share_their_draws_across_images_and_are_reproducible():
    model, sigma, m = Probit(torch.tensor([1.0, -2.0, 0.5, 0.3]), 0.1), 0.3, 64
    x = torch.rand(1, 1, 2, 2, generator=seeded(3)).expand(3, -1, -1, -1)
    classes = torch.tensor([1, 1, 1])
    grads = smoothed_input_gradients(model, x, classes, sigma, m, generator=seeded(0))
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    assert torch.equal(grads, smoothed_input_gradients(model, x, classes, sigma, m, generator=seeded(0)))
    assert not torch.equal(grads, smoothed_input_gradients(model, x, classes, sigma, m, generator=seeded(1)))


def test_the_soft_smoothed_model_gives_the_estimators_log_probabilities_and_gradients():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(4, 3, 2, 2)
    smoothed = SoftSmoothed(base, sigma=0.25, m=64, seed=7)
    expected = smoothed_log_probabilities(base, x, 0.25, 64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(smoothed(x), expected)
    assert not torch.equal(smoothed(x), expected)  # the next call draws fresh noise from the stream
    probe = x.clone().requires_grad_(True)
    again = SoftSmoothed(base, sigma=0.25, m=64, seed=7)
    (grad,) = torch.autograd.grad(again(probe)[:, 1].sum(), probe)
    classes = torch.ones(4, dtype=torch.long)
    direct = smoothed_input_gradients(base, x, classes, 0.25, 64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(grad, direct)
    with pytest.raises(ConfigError):
        SoftSmoothed(base, sigma=0.0, m=4)
