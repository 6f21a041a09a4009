"""Projected gradient descent (Algorithm 1 of the paper's Appendix A) for L2 and L-infinity.

A threat model is one small object (:class:`LinfBall`, :class:`L2Ball`) that knows how to
start inside its ball, take a steepest-ascent step and project back; one PGD loop
(:class:`PGD`) serves both. Attacks work in the model's input space: for images that is
[0, 1] pixels (normalisation lives inside the model), passed as ``bounds=(0, 1)``; the toy
data is unbounded (``bounds=None``).

During an attack the model is put in eval mode (so batch-norm uses its running statistics
and the attack does not change them) and restored to its previous mode afterwards. Only the
perturbation is differentiated, so parameter ``.grad`` fields are left untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .objective import at_least_float32
from .validation import ConfigError, check_choice, check_nonnegative, check_positive, check_positive_int

NORMS: tuple[str, ...] = ("linf", "l2")


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of every sample, shaped to broadcast against ``t``."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).view(-1, *([1] * (t.dim() - 1)))


class ThreatModel(ABC):
    """An eps-ball Delta = {delta : |delta| <= eps} with its PGD primitives."""

    def __init__(self, eps: float):
        self.eps = check_nonnegative("eps", eps)

    @abstractmethod
    def random_start(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random perturbation inside the ball, shaped like ``like``."""

    @abstractmethod
    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """Move ``delta`` by ``step_size`` along the steepest-ascent direction of ``grad``."""

    @abstractmethod
    def project(self, delta: Tensor) -> Tensor:
        """The closest point of the ball to ``delta``."""


class LinfBall(ThreatModel):
    def random_start(self, like, generator=None):
        u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return (2 * u - 1) * self.eps

    def step(self, delta, grad, step_size):
        return delta + step_size * grad.sign()

    def project(self, delta):
        return delta.clamp(-self.eps, self.eps)


class L2Ball(ThreatModel):
    def random_start(self, like, generator=None):
        # Uniform in the ball: a uniform direction and a radius with density ~ r^(d-1).
        direction = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
        d = like[0].numel()
        u = torch.rand((like.shape[0],) + (1,) * (like.dim() - 1), generator=generator, device=like.device, dtype=like.dtype)
        return direction * self.eps * u.pow(1.0 / d)

    def step(self, delta, grad, step_size):
        return delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)

    def project(self, delta):
        norms = _per_sample_norm(delta)
        return delta * (self.eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def threat_model(norm: str, eps: float) -> ThreatModel:
    check_choice("norm", norm, NORMS)
    return LinfBall(eps) if norm == "linf" else L2Ball(eps)


@dataclass(frozen=True)
class PGD:
    """Algorithm 1: ``steps`` steps of size ``step_size`` inside an ``eps``-ball of ``norm``.

    Untargeted (``target=None``): ascend the cross-entropy of the true label.
    Targeted: descend the cross-entropy of ``target``.
    ``random_start`` begins at a uniform point of the ball instead of delta_0 = 0 (the paper's
    real-data evaluation uses it; its Algorithm 1 and the toy experiment do not).
    ``bounds`` = (low, high) keeps ``x + delta`` in the valid input range, e.g. (0, 1).
    """

    norm: str
    eps: float
    step_size: float
    steps: int
    random_start: bool = False
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, NORMS)
        check_nonnegative("eps", self.eps)
        check_positive("step_size", self.step_size)
        check_positive_int("steps", self.steps)
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ConfigError(f"bounds must be (low, high) with low < high; got {self.bounds!r}")

    @classmethod
    def paper_real_data(cls, norm: str, eps: float, steps: int = 20) -> "PGD":
        """The paper's PGD-k evaluation (Appendix C.2): random start, step 2*eps/k, [0, 1] pixels."""
        return cls(norm, eps, step_size=2 * eps / steps, steps=steps, random_start=True, bounds=(0.0, 1.0))

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Adversarial versions of ``x`` (detached, same shape and dtype)."""
        ball = threat_model(self.norm, self.eps)
        x = x.detach()
        delta = ball.random_start(x, generator) if self.random_start else torch.zeros_like(x)
        delta = self._clip_to_bounds(x, delta)
        was_training = model.training
        model.eval()
        try:
            for _ in range(self.steps):
                delta.requires_grad_(True)
                logits = model(x + delta)
                if target is None:
                    objective = F.cross_entropy(at_least_float32(logits), y, reduction="sum")
                else:
                    objective = -F.cross_entropy(at_least_float32(logits), target, reduction="sum")
                (grad,) = torch.autograd.grad(objective, delta)
                with torch.no_grad():
                    delta = ball.project(ball.step(delta, grad, self.step_size))
                    delta = self._clip_to_bounds(x, delta)
        finally:
            model.train(was_training)
        return (x + delta).detach()

    def _clip_to_bounds(self, x: Tensor, delta: Tensor) -> Tensor:
        if self.bounds is None:
            return delta.detach()
        low, high = self.bounds
        return ((x + delta).clamp(low, high) - x).detach()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y`` (one batch, eval mode, mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            correct = (model(x).argmax(dim=1) == y).sum().item()
        return correct / len(y)
    finally:
        model.train(was_training)
