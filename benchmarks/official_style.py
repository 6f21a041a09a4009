"""An "official-style" PAG step, rewritten from the description of the authors' released code
(../shared/reference/official-implementation.md), as the baseline of benchmarks/pag_step.py.

What it keeps from that description, because it decides the cost:

* cross-entropy on the augmented batch (one crop/flip for the whole batch), one forward pass;
* for every image, k distinct target classes drawn and the image replicated k times, with the
  k matching target gradients gathered, in a Python loop over the batch;
* a second forward pass over the B*k replicated batch (augmented again, together with its
  targets), whose input-gradient of -CE (the log-softmax of the target class) is taken with
  create_graph=True;
* PAG loss = C * (1 - mean cosine similarity), loss = CE + lambda * PAG, one SGD step, fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def batch_crop_flip(stack: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """One random crop (after zero padding) and one flip for the whole batch, as in that code."""
    height, width = stack.shape[-2:]
    top, left = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
    padded = F.pad(stack, (padding,) * 4)
    out = padded[..., top : top + height, left : left + width]
    if torch.rand((), generator=generator).item() < 0.5:
        out = out.flip(-1)
    return out


def official_style_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    target_table: Tensor,
    *,
    k: int,
    lam: float,
    generator: torch.Generator,
) -> Tensor:
    """One training step; ``target_table`` holds the C precomputed target gradients per image."""
    num_classes = target_table.shape[1]
    x = batch_crop_flip(images, generator)
    ce = F.cross_entropy(model(x), labels)

    replicated, targets, classes = [], [], []
    for i in range(len(images)):  # the Python loop over the batch
        chosen = torch.randperm(num_classes, generator=generator)[:k].to(images.device)
        replicated.append(images[i].unsqueeze(0).repeat(k, 1, 1, 1))
        targets.append(target_table[i, chosen])
        classes.append(chosen)
    stack = torch.cat([torch.cat(replicated).unsqueeze(1), torch.cat(targets).unsqueeze(1)], dim=1)
    stack = batch_crop_flip(stack, generator)  # image and targets augmented together
    x_rep = stack[:, 0].detach().requires_grad_(True)
    target_grads = stack[:, 1]
    loss_rep = F.cross_entropy(model(x_rep), torch.cat(classes))
    (grads,) = torch.autograd.grad(-loss_rep, x_rep, create_graph=True)
    cosine = F.cosine_similarity(grads.flatten(1), target_grads.flatten(1), dim=1)
    pag = num_classes * (1 - cosine.mean())
    loss = ce + lam * pag
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
