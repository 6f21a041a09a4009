"""Training the toy models: one seed at a time, or every seed as one batched model.

A :class:`StackedToyMLP` holds one 2 -> 32 -> 2 network per seed and trains them all in one
forward and backward pass; each keeps its own data order, targets and parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pagcore.base.progress import progress_bar
from pagcore.paper.objective import pag_loss, per_image_pag_terms, sample_target_classes
from pagcore.paper.targets import build_target_source
from pagcore.toy.problem import NUM_CLASSES, ToyConfig, ToyMLP, seeded_model, toy_split


def train_toy_model(
    x: Tensor,
    y: Tensor,
    config: ToyConfig,
    seed: int,
    *,
    lam: float,
    progress: bool = True,
    description: str = "",
) -> ToyMLP:
    """Adam on Eq. (1) for ``config.epochs`` epochs; ``lam=0`` is the vanilla model.

    The initial weights and the batch order depend only on ``seed``, so the vanilla and the
    PAG model of one seed differ by the loss alone.
    """
    model = seeded_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    source = None
    if lam > 0:
        source = build_target_source(
            config.source, x, y, NUM_CLASSES, seed=seed, pool_size=config.pool_size, center=0.0
        )
    order_generator = torch.Generator().manual_seed(seed)
    class_generator = torch.Generator().manual_seed(seed + 1)
    index_all = torch.arange(len(x))
    model.train()
    for _ in progress_bar(range(config.epochs), enabled=progress, desc=description, unit="epoch"):
        order = torch.randperm(len(x), generator=order_generator)
        for start in range(0, len(x), config.batch_size):
            index = index_all[order[start : start + config.batch_size]]
            xb, yb = x[index], y[index]
            classes = sample_target_classes(
                len(index), NUM_CLASSES, config.classes_per_image, generator=class_generator
            )
            targets = source.target_gradients(xb, index, classes) if source is not None else None
            loss = pag_loss(
                model, xb, yb, classes, targets, lam, num_classes=NUM_CLASSES, gradient=config.gradient, strategy="loop"
            )
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
    model.eval()
    return model


@dataclass(frozen=True)
class ToyMember:
    """One model of a batched toy training: its seed (data, initial weights, batch order), lambda and source."""

    seed: int
    lam: float
    source: str


class StackedToyMLP(nn.Module):
    """M independent ToyMLPs run as one model by grouped matrix products.

    Input rows ``m * n : (m + 1) * n`` of a batch of ``M * n`` rows go through model m. Rows
    never interact, so one backward pass of the summed losses gives every model exactly its own
    gradient, and Adam, being elementwise, updates each model as if it were alone.
    """

    def __init__(self, models: list[ToyMLP]):
        super().__init__()
        self.w1 = nn.Parameter(torch.stack([m[0].weight.detach() for m in models]))  # (M, H, 2)
        self.b1 = nn.Parameter(torch.stack([m[0].bias.detach() for m in models]).unsqueeze(1))  # (M, 1, H)
        self.w2 = nn.Parameter(torch.stack([m[2].weight.detach() for m in models]))  # (M, C, H)
        self.b2 = nn.Parameter(torch.stack([m[2].bias.detach() for m in models]).unsqueeze(1))  # (M, 1, C)

    def forward(self, x: Tensor) -> Tensor:
        h = x.view(len(self.w1), -1, x.shape[-1])
        h = torch.relu(torch.baddbmm(self.b1, h, self.w1.transpose(1, 2)))
        return torch.baddbmm(self.b2, h, self.w2.transpose(1, 2)).reshape(-1, self.w2.shape[1])

    def unstack(self) -> list[ToyMLP]:
        """The M models as separate ToyMLPs (copies, in eval mode)."""
        models = []
        for m in range(len(self.w1)):
            model = ToyMLP(self.w1.shape[1])
            with torch.no_grad():
                model[0].weight.copy_(self.w1[m])
                model[0].bias.copy_(self.b1[m, 0])
                model[2].weight.copy_(self.w2[m])
                model[2].bias.copy_(self.b2[m, 0])
            models.append(model.eval())
        return models


def representative_table(x: Tensor, y: Tensor, config: ToyConfig, member: ToyMember) -> Tensor:
    """For every training point i and class c, the point r with g(x_i, c) = r - x_i: shape (N, C, 2).

    It is what ``member``'s target source answers for the training set; a vanilla member gets
    zeros, whose cosine loss has zero gradient (and lambda = 0 besides).
    """
    if member.lam == 0:
        return torch.zeros(len(x), NUM_CLASSES, x.shape[1])
    source = build_target_source(
        member.source, x, y, NUM_CLASSES, seed=member.seed, pool_size=config.pool_size, center=0.0
    )
    every_class = torch.arange(NUM_CLASSES).expand(len(x), NUM_CLASSES)
    return source.target_gradients(x, torch.arange(len(x)), every_class) + x.unsqueeze(1)


def train_toy_models(
    members: list[ToyMember], config: ToyConfig, *, progress: bool = True, description: str = "toy models"
) -> list[ToyMLP]:
    """:func:`train_toy_model` for many (seed, lambda, source) members at once, as one stacked model.

    Each member sees exactly what it would alone: its seed's data, initial weights, batch order
    and class draws. Only the arithmetic is batched, so results agree with one model at a time up
    to float rounding (tested), and twenty seeds cost little more than one.
    """
    splits = {seed: toy_split(config, seed)[0] for seed in {m.seed for m in members}}
    x = torch.stack([splits[m.seed][0] for m in members])  # (M, N, 2)
    y = torch.stack([splits[m.seed][1] for m in members])  # (M, N)
    reps = torch.stack([representative_table(x[i], y[i], config, m) for i, m in enumerate(members)])  # (M, N, C, 2)
    lams = torch.tensor([m.lam for m in members])
    model = StackedToyMLP([seeded_model(m.seed) for m in members]).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order_generators = [torch.Generator().manual_seed(m.seed) for m in members]
    class_generators = [torch.Generator().manual_seed(m.seed + 1) for m in members]
    num_models, n = y.shape
    rows = torch.arange(num_models).view(-1, 1, 1)
    for _ in progress_bar(range(config.epochs), enabled=progress, desc=description, unit="epoch"):
        orders = torch.stack([torch.randperm(n, generator=g) for g in order_generators])
        for start in range(0, n, config.batch_size):
            index = orders[:, start : start + config.batch_size]  # (M, b)
            b = index.shape[1]
            xb = x.gather(1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))
            yb = y.gather(1, index)
            classes = torch.stack(
                [sample_target_classes(b, NUM_CLASSES, config.classes_per_image, generator=g) for g in class_generators]
            )  # (M, b, k)
            targets = reps[rows, index.unsqueeze(2), classes] - xb.unsqueeze(2)  # (M, b, k, 2)
            _, ce, cosine = per_image_pag_terms(
                model,
                xb.reshape(-1, 2),
                yb.flatten(),
                classes.flatten(0, 1),
                targets.flatten(0, 1),
                num_classes=NUM_CLASSES,
                gradient=config.gradient,
                strategy="loop",
            )
            per_model = ce.view(num_models, b).mean(1) + lams * cosine.view(num_models, b).mean(1)
            optimizer.zero_grad(set_to_none=True)
            per_model.sum().backward()
            optimizer.step()
    return model.unstack()
