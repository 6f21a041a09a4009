"""Randomized smoothing: the smoothed classifier, its certified radius and its gradient.

A base classifier f (a model returning logits) becomes the smoothed classifier

    g(x) = argmax_c P(f(x + δ) = c),   δ ~ N(0, σ² I),

which Cohen, Rosenfeld & Kolter (2019, "Certified Adversarial Robustness via Randomized
Smoothing") show is constant on the L2 ball of radius σ Φ⁻¹(p_A) around x when the top class
has probability p_A > 1/2 under the noise. Their PREDICT (:func:`predict`) and CERTIFY
(:func:`certify`) estimate g and that radius from Monte Carlo counts (:func:`sample_counts`)
with statistical guarantees: a wrong answer (rather than an abstention) has probability at
most alpha.

The argmax votes have no useful gradient, so gradients follow the *soft* smoothed classifier
of Salman et al. (2019, "Provably Robust Deep Learning via Adversarially Trained Smoothed
Classifiers"), G(x)_c = E_δ[softmax(f(x + δ))_c], estimated with m noise draws; writing the
noisy input as x + δ (the reparameterisation) makes the estimate differentiable in x
(:func:`smoothed_log_probabilities`, :func:`smoothed_input_gradients`). Kaur, Cohen & Lipton
(2019) follow these gradients to show that smoothed classifiers have perceptually aligned
gradients.

Images are float tensors in [0, 1]; the noise is added without clipping to [0, 1], as in
Cohen et al. Every draw comes from the caller's seeded ``torch.Generator`` (on the images'
device), so every result can be reproduced.

The two statistics of the algorithms, the binomial test and the Clopper-Pearson bound, are
scipy's.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F
from scipy.stats import beta, binomtest
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.validation import ConfigError, check_positive, check_positive_int
from pagcore.data import as_float
from pagcore.paper.objective import at_least_float32

ABSTAIN = -1
"""What :func:`predict` and :func:`certify` return instead of a class when the counts do not
settle the answer at the requested confidence."""


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"alpha must be a number in (0, 1); got {alpha!r}")
    return float(alpha)


def binomial_p_value(k: int, n: int) -> float:
    """BINOMPVALUE of Cohen et al.: the two-sided p-value of k successes in n trials against p = 1/2."""
    return float(binomtest(k, n, 0.5).pvalue)


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """LOWERCONFBOUND of Cohen et al.: the one-sided (1 - alpha) Clopper-Pearson lower bound on p
    after k successes in n trials, the alpha quantile of Beta(k, n - k + 1) (0 for k = 0)."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def sample_counts(
    model: nn.Module, x: Tensor, sigma: float, n: int, *, batch_size: int, generator: torch.Generator
) -> Tensor:
    """SAMPLEUNDERNOISE of Cohen et al.: how often the base classifier predicts each class on n
    noisy copies x + δ_j of the image ``x`` (C, H, W), δ_j ~ N(0, σ² I), drawn ``batch_size`` at
    a time. Returns int64 counts of shape (num_classes,) on the CPU, summing to n.

    The model runs in eval mode (its previous mode is restored) without autograd.
    """
    check_positive("sigma", sigma)
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    if x.dim() != 3:
        raise ConfigError(f"x must be one image of shape (C, H, W); got shape {tuple(x.shape)}")
    x = as_float(x)
    counts = None
    with eval_mode(model), torch.no_grad():
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            noise = torch.randn((size, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
            # Not clipped to [0, 1]: the certificate holds for exactly this Gaussian around x.
            logits = model(x.unsqueeze(0) + sigma * noise)
            votes = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).cpu()
            counts = votes if counts is None else counts + votes
    return counts


def predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int,
    alpha: float,
    *,
    batch_size: int,
    generator: torch.Generator,
) -> int:
    """PREDICT of Cohen et al.: the smoothed classifier's class for the image ``x``, or ABSTAIN.

    With n_A and n_B the counts of the top two classes among n noisy draws, the top class is
    returned if the two-sided binomial test of n_A successes in n_A + n_B trials against p = 1/2
    rejects at level alpha (p-value <= alpha); then the answer differs from g(x) with
    probability at most alpha.
    """
    _check_alpha(alpha)
    counts = sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)
    if len(counts) < 2:
        raise ConfigError(f"the model must have at least two classes; it has {len(counts)}")
    (n_a, n_b), (c_a, _) = counts.topk(2)
    n_a, n_b = int(n_a), int(n_b)
    return int(c_a) if binomial_p_value(n_a, n_a + n_b) <= alpha else ABSTAIN


def certify(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    *,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[int, float]:
    """CERTIFY of Cohen et al.: the smoothed classifier's class for ``x`` and an L2 radius around x
    in which it cannot change, or (ABSTAIN, 0.0).

    The top class c_A of n0 draws is the guess; its count n_A among n fresh draws gives the
    (1 - alpha) lower confidence bound p_A on P(f(x + δ) = c_A). If p_A > 1/2 the answer is
    (c_A, σ Φ⁻¹(p_A)), and it is wrong (g(x) != c_A, or a smaller true radius) with probability
    at most alpha.
    """
    _check_alpha(alpha)
    check_positive("sigma", sigma)
    check_positive_int("n0", n0)
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    # The guess must not see the counts that test it, or the bound would be biased upwards.
    guess = sample_counts(model, x, sigma, n0, batch_size=batch_size, generator=generator)
    c_a = int(guess.argmax())
    n_a = int(sample_counts(model, x, sigma, n, batch_size=batch_size, generator=generator)[c_a])
    p_a_lower = lower_confidence_bound(n_a, n, alpha)
    if p_a_lower <= 0.5:
        return ABSTAIN, 0.0
    return c_a, sigma * NormalDist().inv_cdf(p_a_lower)


def smoothed_log_probabilities(
    model: nn.Module, x: Tensor, sigma: float, m: int, *, generator: torch.Generator
) -> Tensor:
    """log G(x) of the soft smoothed classifier, G(x)_c = E_δ[softmax(f(x + δ))_c], δ ~ N(0, σ² I),
    for a batch ``x`` (B, C, H, W): shape (B, num_classes).

    The Monte Carlo estimate log((1/m) Σ_j softmax(f(x + δ_j))) uses the same m draws δ_j for every
    image and is differentiable in x (and in the model's parameters). It runs the B·m noisy images
    as one batch, in eval mode (the model's previous mode is restored).
    """
    check_positive("sigma", sigma)
    check_positive_int("m", m)
    x = as_float(x)
    noise = torch.randn((m, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    noisy = (x.unsqueeze(1) + sigma * noise).flatten(0, 1)  # (B·m, C, H, W), image-major
    with eval_mode(model):
        log_probs = F.log_softmax(at_least_float32(model(noisy)), dim=1).view(len(x), m, -1)
    # The mean of the probabilities, taken in log space so that small probabilities keep their digits.
    return torch.logsumexp(log_probs, dim=1) - math.log(m)


def smoothed_input_gradients(
    model: nn.Module, x: Tensor, classes: Tensor, sigma: float, m: int, *, generator: torch.Generator
) -> Tensor:
    """∇_x log G(x)_y of the soft smoothed classifier for each image of ``x`` (B, C, H, W) and its
    class y = ``classes[i]`` (B,): detached, shaped like x.

    The gradient of the estimate of :func:`smoothed_log_probabilities`, i.e.
    Σ_j softmax(f(x + δ_j))_y ∇ log softmax(f(x + δ_j))_y / Σ_j softmax(f(x + δ_j))_y, with the same
    draws δ_j for every image. Only x is differentiated: the parameters' ``.grad`` stay untouched.
    """
    x = as_float(x).detach().requires_grad_(True)
    log_probs = smoothed_log_probabilities(model, x, sigma, m, generator=generator)
    chosen = log_probs.gather(1, classes.view(-1, 1).to(log_probs.device))
    # In eval mode the images do not interact, so the gradient of the sum is each image's own.
    (grads,) = torch.autograd.grad(chosen.sum(), x)
    return grads


class SoftSmoothed(nn.Module):
    """The soft smoothed classifier of ``base`` as a model: ``forward`` returns the estimate of
    log G(x) (:func:`smoothed_log_probabilities`) with m fresh noise draws per call from a seeded
    stream, so that every attack, picture and score of the book runs on it unchanged. PGD on it
    is Salman et al.'s attack on the smoothed classifier; its gradients are what Kaur, Cohen &
    Lipton look at for perceptual alignment."""

    def __init__(self, base: nn.Module, sigma: float, m: int, seed: int = 0):
        super().__init__()
        check_positive("sigma", sigma)
        check_positive_int("m", m)
        self.base, self.sigma, self.m, self.seed = base, sigma, m, seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Start the noise stream again from ``seed``: a chunk of an evaluation then draws the same
        noise however many chunks ran before it."""
        self.seed, self.generators = seed, {}

    def forward(self, x: Tensor) -> Tensor:
        if x.device not in self.generators:  # one seeded stream per device, made where it is first needed
            self.generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        return smoothed_log_probabilities(self.base, x, self.sigma, self.m, generator=self.generators[x.device])
