"""A number for perceptual alignment: how much a model's input-gradients agree with a robust model's.

The paper judges PAG from pictures (targeted PGD towards each class, Figs. 1 and 4). Two
quantitative versions of that judgement, both relative to a *reference* model, an
adversarially trained classifier whose gradients are known to be perceptually aligned:

* :func:`gradient_alignment`: the mean, over test images and classes c, of the cosine between
  the model's and the reference's input-gradients of log p(c | x). 1 means the model's
  gradients point exactly where the reference's do; unrelated gradients in thousands of
  dimensions give about 0. This is Eq. (2) of the paper with the reference's gradient as the
  target, so it measures the property the PAG term trains for, on unseen images.
* :func:`score_alignment`: the same cosine against the score-based targets of a class-conditional
  denoiser (the later paper's principled source) instead of a robust model's gradients.
* :func:`targeted_confidence`: the mean probability the *reference* gives to the target class
  of large-eps targeted PGD images made on the model (the pictures of Figs. 1 and 4, judged by
  a robust classifier instead of by eye). Chance level is 1/C for pictures that do not change
  class, and it approaches 1 when the pictures look like their target class to the reference.

Both run in float32 and eval mode, and never change either model. Where the perceptually
aligned directions are known without a reference (the 2-D toy, whose data lie on a line),
:func:`direction_alignment` compares the model's gradients with them directly.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.data import as_float
from pagcore.paper.attacks import PGD
from pagcore.paper.denoiser import Denoiser, log_posterior_gradients, seeded_noise


def log_probability_gradients(model: nn.Module, x: Tensor, classes: Tensor) -> Tensor:
    """d log p(c | x) / dx for every image and every class in ``classes``: shape (n, len(classes), *x.shape[1:]).

    In eval mode images do not interact, so one backward pass of the batch sum per class gives
    every image's gradient at once."""
    x = x.detach().float()
    grads = []
    with eval_mode(model), torch.autocast(x.device.type, enabled=False):
        for c in classes.tolist():
            probe = x.clone().requires_grad_(True)
            log_probs = F.log_softmax(model(probe).float(), dim=1)
            (grad,) = torch.autograd.grad(log_probs[:, c].sum(), probe)
            grads.append(grad)
    return torch.stack(grads, dim=1)


def _mean_cosine(model: nn.Module, images: Tensor, reference, num_classes: int, batch_size: int) -> dict:
    """Mean cosine between ``model``'s d log p(c | x) / dx and ``reference(x, classes)``, per class and in all."""
    classes = torch.arange(num_classes)
    total = torch.zeros(num_classes, dtype=torch.float64, device=images.device)
    for start in range(0, len(images), batch_size):
        x = as_float(images[start : start + batch_size]).float()
        ours = log_probability_gradients(model, x, classes).flatten(2)
        theirs = reference(x, classes).flatten(2).float()
        total += F.cosine_similarity(ours, theirs, dim=2, eps=1e-12).double().sum(dim=0)
    per_class = (total / len(images)).tolist()
    return {"score": sum(per_class) / num_classes, "per_class": per_class, "images": len(images)}


def gradient_alignment(
    model: nn.Module, reference: nn.Module, images: Tensor, *, num_classes: int, batch_size: int = 100
) -> dict:
    """Mean cosine between the input-gradients of ``model`` and ``reference`` (module docstring).

    ``images`` are floats in [0, 1] (or uint8) on the models' device. Returns ``score`` (the
    mean over images and classes), ``per_class`` (the mean over images) and ``images``."""
    return _mean_cosine(model, images, partial(log_probability_gradients, reference), num_classes, batch_size)


def score_alignment(
    model: nn.Module,
    denoiser: Denoiser,
    images: Tensor,
    *,
    sigma: float,
    num_classes: int,
    seed: int = 0,
    batch_size: int = 100,
) -> dict:
    """Mean cosine between the model's input-gradients and the score-based targets of ``denoiser``
    at ``sigma`` (one noise draw per image, seeded by its position and ``seed``), as
    :func:`gradient_alignment` reports it.

    A PAG score that needs no robust model: the reference is the log-posterior gradient of a
    generative model, which favours no adversarially trained teacher or RIGD student."""
    seen = 0

    def targets(x: Tensor, classes: Tensor) -> Tensor:
        nonlocal seen
        # Each image's noise is seeded by its position (and the seed), whatever the batch size.
        noisy = x + sigma * seeded_noise(range(seen, seen + len(x)), tuple(x.shape[1:]), draw=seed).to(x.device)
        seen += len(x)
        with eval_mode(denoiser), torch.no_grad():
            return log_posterior_gradients(denoiser, noisy, sigma, classes.to(x.device).expand(len(x), -1))

    return _mean_cosine(model, images, targets, num_classes, batch_size)


def direction_alignment(model: nn.Module, x: Tensor, classes: Tensor, directions: Tensor) -> Tensor:
    """Per point, the cosine between d log p(classes[i] | x_i) / dx_i and ``directions[i]``.

    ``directions`` has the shape of ``x``; it holds the known aligned direction for each point's
    class, e.g. towards the nearest example of that class. Gradients in float32, eval mode."""
    present = torch.unique(classes)
    every = log_probability_gradients(model, x, present)
    index = torch.searchsorted(present, classes.to(present.device))
    chosen = every[torch.arange(len(x), device=x.device), index].flatten(1)
    return F.cosine_similarity(chosen, directions.float().flatten(1), dim=1, eps=1e-12)


def targeted_confidence(
    model: nn.Module,
    reference: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    norm: str = "l2",
    eps: float = 10.0,
    steps: int = 60,
) -> dict:
    """Mean reference probability of the target class after targeted PGD on ``model`` (module docstring).

    Every image is pushed towards every class other than its own label, with the settings of
    the book's PAG pictures (L2, eps 10 on CIFAR-10, 60 steps of 2.5 * eps / steps)."""
    x = as_float(images).float()
    n = len(x)
    targets = torch.arange(num_classes, device=x.device).repeat(n)
    sources = x.repeat_interleave(num_classes, dim=0)
    own = labels.to(x.device).repeat_interleave(num_classes)
    keep = targets != own
    attack = PGD(norm, eps, step_size=2.5 * eps / steps, steps=steps, bounds=(0.0, 1.0))
    moved = attack(model, sources[keep], own[keep], target=targets[keep])
    with eval_mode(reference), torch.no_grad():
        probabilities = F.softmax(reference(moved).float(), dim=1)
    confidence = probabilities.gather(1, targets[keep][:, None]).squeeze(1)
    return {
        "score": confidence.mean().item(),
        "pairs": int(keep.sum()),
        "chance": 1 / num_classes,
        "attack": attack.settings(),
    }
