"""The PAG training objective: Eq. (1) and Eq. (2) of Ganz, Kawar & Elad.

.. math::

    \\mathcal{L}_{total}(x, y) = \\mathcal{L}_{CE}(f_\\theta(x), y)
        + \\lambda \\sum_{y_t=1}^{C} \\mathcal{L}_{cos}(\\nabla_x f_\\theta(x)_{y_t}, g(x, y_t))   \\quad (1)

    \\mathcal{L}_{cos}(v, u) = 1 - \\frac{v^\\top u}{\\max(\\|v\\|_2 \\|u\\|_2, \\varepsilon)}   \\quad (2)

The pieces, in the order a training step uses them:

* :func:`sample_target_classes` picks which target classes y_t enter the sum (all C, or an
  unbiased sample of k of them);
* :func:`class_input_gradients` computes the model's input-gradient for each of them, with a
  graph so that the cosine loss can be back-propagated into the weights;
* :func:`cosine_loss` is Eq. (2);
* :func:`pag_loss` puts them together into Eq. (1), averaged over the batch.

The target gradients g(x, y_t) themselves come from :mod:`pagcore.paper.targets`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagcore.base.validation import check_choice, check_nonnegative, check_positive

GradientKind = Literal["logit", "log_softmax"]
GRADIENTS: tuple[str, ...] = get_args(GradientKind)
"""What is differentiated w.r.t. the input: the raw logit f(x)_{y_t}, as Eq. (1) is written,
or log p(y_t | x), as the authors' released code does (it takes the gradient of -CE)."""

GradientStrategy = Literal["loop", "vmap", "replicate"]
GRADIENT_STRATEGIES: tuple[str, ...] = get_args(GradientStrategy)
"""How the k input-gradients of one batch are computed; all give the same numbers (batch-norm
included, see :func:`class_input_gradients`) and differ only in speed, which
``benchmarks/pag_step.py`` measures."""

DEFAULT_COSINE_EPS = 1e-8


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is bf16/fp16 (autocast outputs); float32/float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def cosine_loss(v: Tensor, u: Tensor, eps: float = DEFAULT_COSINE_EPS) -> Tensor:
    """Eq. (2) along the last dimension: ``1 - v.u / max(|v| |u|, eps)``.

    Computed in float32 or wider even when ``v`` comes from a bf16 forward pass, because a
    cosine of two nearly orthogonal high-dimensional vectors loses its digits in bf16. A zero
    vector gives a loss of exactly 1 and a finite gradient, thanks to ``eps``.
    """
    dtype = torch.promote_types(at_least_float32(v).dtype, u.dtype)
    v, u = v.to(dtype), u.to(dtype)
    dot = (v * u).sum(dim=-1)
    norms = torch.linalg.vector_norm(v, dim=-1) * torch.linalg.vector_norm(u, dim=-1)
    return 1.0 - dot / norms.clamp_min(eps)


def class_scores(logits: Tensor, gradient: GradientKind) -> Tensor:
    """The per-class scalar whose input-gradient the PAG loss aligns (see ``GRADIENTS``)."""
    if gradient == "logit":
        return logits
    if gradient == "log_softmax":
        # At least float32: a bf16 log-softmax would round away small class probabilities.
        return torch.log_softmax(at_least_float32(logits), dim=-1)
    raise ValueError(f"gradient must be one of {GRADIENTS}; got {gradient!r}")


def sample_target_classes(
    batch_size: int,
    num_classes: int,
    k: int | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Target classes for every image of a batch, shape ``(batch_size, k)``.

    With ``k`` = None or ``k == num_classes`` every row is ``0 .. C-1``, the full sum of
    Eq. (1). With ``k < C`` each row holds k distinct classes drawn uniformly without
    replacement, so each class enters with probability k / C; :func:`pag_loss` scales the
    sampled sum by C / k, which makes it an unbiased estimate of the full sum. The draw stays
    on ``device`` (no host synchronisation).
    """
    if k is None or k == num_classes:
        return torch.arange(num_classes, device=device).expand(batch_size, num_classes)
    if not 1 <= k <= num_classes:
        raise ValueError(f"k (target classes per image) must be in 1..{num_classes}; got {k}")
    keys = torch.rand(batch_size, num_classes, generator=generator, device=device)
    return keys.argsort(dim=1)[:, :k]


def _couples_samples(module: nn.Module) -> bool:
    """Whether ``module`` normalises with statistics of the current batch (and so couples its samples).

    ``_BatchNorm`` is the common base of BatchNorm1d/2d/3d and SyncBatchNorm. A batch-norm layer
    without running statistics uses batch statistics even in eval mode.
    """
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or module.running_mean is None)


def _batch_moments(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    """Forward hook: keep the mean and biased variance the layer normalised with (float32 or wider)."""
    x = at_least_float32(inputs[0])
    dims = [0, *range(2, x.dim())]
    module._pag_held_moments = (x.mean(dims), x.var(dims, unbiased=False))


def _normalise_with_held_moments(module: nn.Module, x: Tensor) -> Tensor:
    """Batch-norm with the moments recorded by :func:`_batch_moments`, as one per-channel affine map.

    The moments still depend on the weights (they came from the first pass), so the parameter
    gradient keeps the statistics' path; they do not depend on this pass's input.
    """
    mean, var = module._pag_held_moments
    scale = torch.rsqrt(var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    shape = (1, -1, *([1] * (x.dim() - 2)))
    return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)


@contextmanager
def _held_batch_statistics(layers: list[nn.Module]) -> Iterator[None]:
    """Within the block, ``layers`` normalise with their held moments instead of the batch's."""
    try:
        for layer in layers:
            # An instance attribute shadows the class's forward for this module only.
            layer.forward = partial(_normalise_with_held_moments, layer)
        yield
    finally:
        for layer in layers:
            del layer.forward
            del layer._pag_held_moments


def _forward_recording_moments(model: nn.Module, x: Tensor, layers: list[nn.Module]) -> Tensor:
    """An ordinary forward pass (running statistics update once) that records each layer's moments."""
    handles = [layer.register_forward_hook(_batch_moments) for layer in layers]
    try:
        return model(x)
    finally:
        for handle in handles:
            handle.remove()


def class_input_gradients(
    model: nn.Module,
    x: Tensor,
    classes: Tensor,
    gradient: GradientKind = "logit",
    *,
    strategy: GradientStrategy = "vmap",
    create_graph: bool = True,
) -> tuple[Tensor, Tensor]:
    """Logits of ``x`` and the per-image input-gradients ``grad_{x_i} score(x_i)[classes[i, j]]``.

    Returns ``(logits, grads)`` with ``logits`` of shape ``(B, C)`` and ``grads`` of shape
    ``(B, k, *x.shape[1:])``. With ``create_graph=True`` the gradients are differentiable
    w.r.t. the model's parameters, which is what makes Eq. (1) trainable.

    **Batch-norm in train mode.** There the logits of image i depend on every image of the
    batch through the batch statistics, so "the input-gradient of image i" needs a definition.
    Ours holds the batch statistics fixed: the gradient is that of image i's logits w.r.t. x_i
    with every batch-norm layer normalising by the mean and variance of the whole batch, taken
    as constants of x. It differs from the fully coupled derivative d f(X)_i / d x_i only by
    image i's own 1/B share of the statistics, and unlike the derivative of the batch-sum it
    has no cross-image terms. To compute it, a first, ordinary forward pass gives the logits
    (for the cross-entropy) and records each layer's moments; a second pass on a copy of the
    input that requires grad normalises with those moments. The moments still depend on the
    weights, so the parameter gradient of Eq. (1) keeps the statistics' path. In eval mode, or
    without batch-norm, images do not interact and one pass serves both.

    Strategies (the same numbers, different speed; ``benchmarks/pag_step.py`` measures them):

    * ``"loop"``: one forward pass, then one backward pass per column j of ``classes``.
    * ``"vmap"``: one forward pass and the k backward passes batched into one
      (``torch.autograd.grad(..., is_grads_batched=True)``).
    * ``"replicate"``: every image repeated k times, one forward and one backward pass of the
      B*k batch, as the authors' code does (without its Python loop over the batch).
    """
    check_choice("strategy", strategy, GRADIENT_STRATEGIES)
    coupling_layers = [m for m in model.modules() if _couples_samples(m)]
    if coupling_layers:
        logits = _forward_recording_moments(model, x.detach(), coupling_layers)
        with _held_batch_statistics(coupling_layers):
            _, grads = _per_image_gradients(model, x, classes, gradient, strategy, create_graph)
        return logits, grads
    return _per_image_gradients(model, x, classes, gradient, strategy, create_graph)


def _per_image_gradients(
    model: nn.Module, x: Tensor, classes: Tensor, gradient: GradientKind, strategy: str, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """:func:`class_input_gradients` for a model whose images do not interact."""
    batch_size, k = classes.shape
    if strategy == "replicate":
        x_rep = x.detach().repeat_interleave(k, dim=0)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            x_rep = x_rep.contiguous(memory_format=torch.channels_last)  # keep the conv layout
        x_rep.requires_grad_(True)
        logits_rep = model(x_rep)
        chosen = class_scores(logits_rep, gradient).gather(1, classes.reshape(-1, 1))
        (grads,) = torch.autograd.grad(chosen.sum(), x_rep, create_graph=create_graph)
        # The copies of one image have identical logits; the first carries them.
        return logits_rep[::k], grads.view(batch_size, k, *x.shape[1:])

    x = x.detach().requires_grad_(True)
    logits = model(x)
    scores = class_scores(logits, gradient)
    if strategy == "loop":
        columns = []
        for j in range(k):
            chosen = scores.gather(1, classes[:, j : j + 1])
            (g,) = torch.autograd.grad(chosen.sum(), x, create_graph=create_graph, retain_graph=True)
            columns.append(g)
        return logits, torch.stack(columns, dim=1)

    # vmap: row j of the batched cotangent selects class classes[i, j] for every image i.
    # (scatter rather than F.one_hot, which checks the class range on the host.)
    cotangents = torch.zeros(k, batch_size, scores.shape[1], dtype=scores.dtype, device=scores.device)
    cotangents.scatter_(2, classes.t().unsqueeze(2), 1.0)  # (k, B, C)
    (grads,) = torch.autograd.grad(
        scores, x, cotangents, is_grads_batched=True, create_graph=create_graph, retain_graph=True
    )
    return logits, grads.transpose(0, 1)


@dataclass
class PagLoss:
    """The terms of Eq. (1) for one batch, each a 0-dim tensor still on the device."""

    total: Tensor
    cross_entropy: Tensor
    cosine: Tensor  # the class sum of Eq. (2), averaged over the batch (before lambda)
    logits: Tensor


def per_image_pag_terms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    classes: Tensor,
    target_gradients: Tensor,
    *,
    num_classes: int,
    gradient: GradientKind = "logit",
    strategy: GradientStrategy = "vmap",
    eps: float = DEFAULT_COSINE_EPS,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits, cross_entropy, cosine)``: Eq. (1)'s two terms for every image, shapes (B, C), (B,), (B,).

    ``cosine[i]`` is the class sum of Eq. (2) for image i, scaled by ``num_classes / k`` so that
    sampling k < C classes estimates the full sum without bias.
    """
    if target_gradients.shape[:2] != classes.shape:
        raise ValueError(
            f"target_gradients must have shape (B, k, ...) = {tuple(classes.shape)} + input shape; "
            f"got {tuple(target_gradients.shape)}"
        )
    logits, grads = class_input_gradients(model, x, classes, gradient, strategy=strategy)
    per_class = cosine_loss(grads.flatten(2), target_gradients.flatten(2), eps)  # (B, k)
    cosine = per_class.sum(dim=1) * (num_classes / classes.shape[1])
    cross_entropy = F.cross_entropy(at_least_float32(logits), y, reduction="none")
    return logits, cross_entropy, cosine


def pag_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    classes: Tensor,
    target_gradients: Tensor | None,
    lam: float,
    *,
    num_classes: int,
    gradient: GradientKind = "logit",
    strategy: GradientStrategy = "vmap",
    eps: float = DEFAULT_COSINE_EPS,
) -> PagLoss:
    """Eq. (1), averaged over the batch.

    ``classes`` is ``(B, k)`` from :func:`sample_target_classes` and ``target_gradients`` is
    ``(B, k, *x.shape[1:])``, the g(x, y_t) of those classes (see :func:`per_image_pag_terms`).
    With ``lam == 0`` this is plain cross-entropy training (the "vanilla" baseline) and no
    input-gradient is computed.
    """
    check_nonnegative("lam", lam)
    check_positive("eps", eps)
    if lam == 0:
        logits = model(x)
        ce = F.cross_entropy(at_least_float32(logits), y)
        return PagLoss(total=ce, cross_entropy=ce, cosine=torch.zeros_like(ce), logits=logits)
    if target_gradients is None:
        raise ValueError("target_gradients are required when lam > 0")
    logits, ce, cosine = per_image_pag_terms(
        model, x, y, classes, target_gradients, num_classes=num_classes, gradient=gradient, strategy=strategy, eps=eps
    )
    ce, cosine = ce.mean(), cosine.mean()
    return PagLoss(total=ce + lam * cosine, cross_entropy=ce, cosine=cosine, logits=logits)
