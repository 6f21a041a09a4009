"""Projected gradient descent (Algorithm 1 of the paper's Appendix A) for L2 and L-infinity.

A threat model is one small object (:class:`LinfBall`, :class:`L2Ball`) that knows how to
start inside its ball, take a steepest-ascent step and project back; one PGD loop
(:class:`PGD`) serves both. Attacks work in the model's input space: for images that is
[0, 1] pixels (normalisation lives inside the model), passed as ``bounds=(0, 1)``; the toy
data is unbounded (``bounds=None``).

During an attack the model is put in eval mode (so batch-norm uses its running statistics
and the attack does not change them) and restored to its previous mode afterwards. Only the
perturbation is differentiated, so parameter ``.grad`` fields are left untouched. Losses are
taken in float32 even if the caller runs the model under autocast.

Random starts follow the evaluation code the paper used (Appendix C.2: the TRADES repository,
"extended to contain L2 attack"; the authors' released code does the same): uniform noise in
[-eps, eps] per pixel for L-inf, and for L2 the very same per-pixel noise with the L-inf
radius 8/255, not a point drawn in the L2 ball. In CIFAR-10's 3,072 dimensions that start has
an L2 norm of about 1.0 (3.0 for STL-10's 27,648), larger than the L2 radii 0.5 and 1.5; the
first step's projection brings it back onto the ball. The start is the same for every run
and every L2 radius, so all our L2 numbers share one definition.

Beyond the paper's attack (last iterate of one start), :class:`PGD` can keep each image's
worst-case iterate (``keep_best``) and try several random starts (``restarts``), and
:meth:`PGD.settings` gives the exact settings to store beside every number it produced.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.validation import ConfigError, check_choice, check_nonnegative, check_positive, check_positive_int
from pagcore.paper.objective import at_least_float32

THREATS: tuple[str, ...] = ("linf", "l2")
"""The threat models: the norm of the ball an attack (or adversarial training) stays in."""

NORM_WORDS = {"linf": "ℓ∞", "l2": "ℓ2"}
"""How the book writes each threat model."""

# Half-width of the per-pixel uniform noise that starts an L2 attack: TRADES' L-inf start
# (8/255) kept unchanged when its code was extended to L2, as in the paper's evaluation.
L2_START_HALF_WIDTH = 8 / 255
# "trades": that start, for images; "ball": uniform in the L2 ball, for other data (the toy).
L2_STARTS: tuple[str, ...] = ("trades", "ball")


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
    def __init__(self, eps: float, start: str = "trades"):
        super().__init__(eps)
        self.start = check_choice("l2_start", start, L2_STARTS)

    def random_start(self, like, generator=None):
        if self.start == "trades":
            # Per-pixel uniform noise of half-width 8/255 whatever eps is (see the module docstring);
            # deliberately not projected, as in the paper's evaluation code: the first step does it.
            u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
            return (2 * u - 1) * L2_START_HALF_WIDTH
        # Uniform in the ball: a uniform direction and a radius with density ~ r^(d-1). For data
        # that are not [0, 1] images (the toy's points lie tens of units out), where 8/255 means nothing.
        direction = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
        u = torch.rand(
            (like.shape[0],) + (1,) * (like.dim() - 1), generator=generator, device=like.device, dtype=like.dtype
        )
        return direction * self.eps * u.pow(1.0 / like[0].numel())

    def step(self, delta, grad, step_size):
        return delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)

    def project(self, delta):
        norms = _per_sample_norm(delta)
        return delta * (self.eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def threat_model(norm: str, eps: float, l2_start: str = "trades") -> ThreatModel:
    check_choice("norm", norm, THREATS)
    return LinfBall(eps) if norm == "linf" else L2Ball(eps, l2_start)


START_DESCRIPTION = {
    "linf": "uniform in [-eps, eps] per pixel",
    "trades": (
        f"uniform in [-{L2_START_HALF_WIDTH:.6f}, {L2_START_HALF_WIDTH:.6f}] per pixel (8/255, TRADES), unprojected"
    ),
    "ball": "uniform in the L2 ball",
}


@dataclass
class _Outcome:
    """Per image: the adversarial input found so far, whether it succeeds, and its loss."""

    x_adv: Tensor
    success: Tensor
    loss: Tensor

    def update(self, rows: Tensor, x_adv: Tensor, success: Tensor, loss: Tensor) -> None:
        """Offer new candidates for the images ``rows``. Each is taken where it is worse for the
        model: it succeeds and the old one did not, or neither succeeds and its loss is higher.
        A success is never replaced, so the first successful candidate is the one kept."""
        old_success, old_loss = self.success[rows], self.loss[rows]
        better = (success & ~old_success) | (~success & ~old_success & (loss > old_loss))
        taken = rows[better]
        self.x_adv[taken] = x_adv[better]
        self.success[taken] = success[better]
        self.loss[taken] = loss[better].to(self.loss.dtype)


@dataclass(frozen=True)
class PGD:
    """Algorithm 1: ``steps`` steps of size ``step_size`` inside an ``eps``-ball of ``norm``.

    Untargeted (``target=None``): ascend the cross-entropy of the true label.
    Targeted: descend the cross-entropy of ``target``.
    ``random_start`` begins at random noise (see the module docstring) instead of delta_0 = 0
    (the paper's real-data evaluation uses it; its Algorithm 1 and the toy experiment do not).
    ``bounds`` = (low, high) keeps ``x + delta`` in the valid input range, e.g. (0, 1).

    The paper's attack returns the last iterate of a single start. ``keep_best=True`` returns,
    per image, the first point that fools the model (misclassified, or classified as
    ``target``), or failing that the one of highest loss, among the unperturbed image and every
    projected iterate; ``restarts`` > 1 repeats the attack from fresh random starts and keeps,
    per image, the first restart that fools the model, or the one of highest loss (without
    ``keep_best`` each restart offers its last iterate only).

    Since a success is final, an image is attacked only until it is fooled: with ``keep_best``
    it leaves the batch at the iterate that fools it (at once, if the model gets it wrong
    unperturbed), and with restarts it skips the later ones. Every restart still draws a start
    for the whole batch, so each image starts where it would if none had left, and the first
    restart starts where a one-start attack with the same generator does: the stronger attack
    is never weaker. Leaving fooled images out changes only the cost, which for a model of low
    robust accuracy falls several times over.
    """

    norm: str
    eps: float
    step_size: float
    steps: int
    random_start: bool = False
    bounds: tuple[float, float] | None = None
    restarts: int = 1
    keep_best: bool = False
    l2_start: str = "trades"

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, THREATS)
        check_choice("l2_start", self.l2_start, L2_STARTS)
        check_nonnegative("eps", self.eps)
        check_positive("step_size", self.step_size)
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ConfigError(f"bounds must be (low, high) with low < high; got {self.bounds!r}")
        if self.restarts > 1 and not self.random_start:
            raise ConfigError("restarts > 1 needs random_start=True (without it every restart is the same attack)")

    @classmethod
    def paper_real_data(
        cls,
        norm: str,
        eps: float,
        steps: int = 20,
        *,
        restarts: int = 1,
        keep_best: bool = False,
        l2_start: str = "trades",
    ) -> PGD:
        """The paper's PGD-k evaluation (Appendix C.2): random start, step 2*eps/k, [0, 1] pixels.

        ``restarts`` and ``keep_best`` make it stronger; ``l2_start="ball"`` starts an ℓ2 attack inside
        its ball instead of the paper's per-pixel start; the defaults are the paper's attack."""
        return cls(
            norm,
            eps,
            step_size=2 * eps / steps,
            steps=steps,
            random_start=True,
            bounds=(0.0, 1.0),
            restarts=restarts,
            keep_best=keep_best,
            l2_start=l2_start,
        )

    def settings(self) -> dict:
        """Everything that defines this attack, to be stored with every number it produced."""
        return {
            "attack": "pgd",
            "norm": self.norm,
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "random_start": START_DESCRIPTION["linf" if self.norm == "linf" else self.l2_start]
            if self.random_start
            else "none",
            "restarts": self.restarts,
            "iterate": "best" if self.keep_best else "last",
            "best_of": "the unperturbed image and every projected iterate" if self.keep_best else None,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "loss": "cross-entropy",
            "precision": "float32",
        }

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Adversarial versions of ``x`` (detached, same shape and dtype)."""
        ball = threat_model(self.norm, self.eps, self.l2_start)
        x = x.detach()
        with eval_mode(model):
            # The paper's attack needs no bookkeeping: its answer is the last iterate.
            if self.restarts == 1 and not self.keep_best:
                return x + self._descend(model, ball, x, y, target, self._start(ball, x, generator))
            # The worst case per image over everything tried so far, starting from nothing;
            # with keep_best the unperturbed image is the first candidate.
            outcome = _Outcome(
                x.clone(), torch.zeros_like(y, dtype=torch.bool), torch.full_like(y, -torch.inf, dtype=torch.float64)
            )
            everyone = torch.arange(len(x), device=x.device)
            if self.keep_best:
                self._judge(model, outcome, everyone, x, y, target)
            for _ in range(self.restarts):
                start = self._start(ball, x, generator)  # drawn for every image, see the docstring
                rows = everyone[~outcome.success]
                if len(rows) == 0:
                    continue
                target_rows = None if target is None else target[rows]
                delta = self._descend(model, ball, x[rows], y[rows], target_rows, start[rows], rows, outcome)
                if not self.keep_best:  # each restart offers its last iterate
                    self._judge(model, outcome, rows, x[rows] + delta, y[rows], target_rows)
            return outcome.x_adv

    def _start(self, ball: ThreatModel, x: Tensor, generator: torch.Generator | None) -> Tensor:
        delta = ball.random_start(x, generator) if self.random_start else torch.zeros_like(x)
        return self._clip_to_bounds(x, delta)

    def _descend(self, model, ball, x, y, target, delta, rows=None, outcome=None) -> Tensor:
        """``steps`` steps from ``delta``; returns the last delta. With ``keep_best`` every
        projected iterate, the last included, is offered to ``outcome`` (for the images
        ``rows``) and an image leaves the batch once fooled, so the returned delta is then that
        of the images still in it; the answer is in ``outcome``. The start itself is not
        offered: an L2 start may lie outside the ball."""
        active = torch.arange(len(x), device=x.device)
        for step in range(self.steps):
            xs, ys = x[active], y[active]
            targets = None if target is None else target[active]
            delta.requires_grad_(True)
            logits = at_least_float32(model(xs + delta))
            losses = self._attacker_losses(logits, ys, targets)
            (grad,) = torch.autograd.grad(losses.sum(), delta)
            with torch.no_grad():
                fooled = None
                if self.keep_best and step > 0:  # this forward pass judged iterate ``step``
                    fooled = self._success(logits, ys, targets)
                    outcome.update(rows[active], xs + delta, fooled, losses)
                delta = self._clip_to_bounds(xs, ball.project(ball.step(delta, grad, self.step_size)))
                if fooled is not None:  # a fooled image is done: its success is final
                    active, delta = active[~fooled], delta[~fooled]
                    if len(active) == 0:
                        return delta
        if self.keep_best:
            targets = None if target is None else target[active]
            self._judge(model, outcome, rows[active], x[active] + delta, y[active], targets)
        return delta

    def _judge(self, model, outcome: _Outcome, rows: Tensor, x_adv: Tensor, y: Tensor, target: Tensor | None) -> None:
        """Offer ``x_adv`` (for the images ``rows``) to ``outcome``."""
        with torch.no_grad():
            logits = at_least_float32(model(x_adv))
            outcome.update(rows, x_adv, self._success(logits, y, target), self._attacker_losses(logits, y, target))

    @staticmethod
    def _attacker_losses(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Per image, what the attacker maximises: CE of the label, or minus CE of the target."""
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")

    @staticmethod
    def _success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        predicted = logits.argmax(dim=1)
        return predicted != y if target is None else predicted == target

    def _clip_to_bounds(self, x: Tensor, delta: Tensor) -> Tensor:
        if self.bounds is None:
            return delta.detach()
        low, high = self.bounds
        return ((x + delta).clamp(low, high) - x).detach()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y`` (one batch, eval mode, mode restored)."""
    with eval_mode(model), torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).sum().item()
    return correct / len(y)
