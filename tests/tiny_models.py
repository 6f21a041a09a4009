"""Tiny models for attack and checklist tests: a normally trained one and two that mask gradients."""

import torch
from torch import nn


def image_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)
    )


def separable_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """6x6 colour images whose class (of 4) is decided by their channel means."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 6, 6, generator=generator)
    means = x.mean(dim=(2, 3))
    y = (means[:, 0] > means[:, 1]).long() + 2 * (means[:, 2] > 0.5).long()
    return x, y


def trained_image_model(seed: int = 0):
    """A small model fitted to separable data, so that attacks have something to break."""
    x, y = separable_data()
    model = image_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), x, y


class QuantisedInput(nn.Module):
    """Rounds the input to ``levels`` grey levels before ``model``: the gradient through the
    rounding is exactly zero, so gradient attacks are blind while the model is as fragile as before."""

    def __init__(self, model: nn.Module, levels: int = 32):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


class SaturatedSoftmax(nn.Module):
    """Multiplies the logits by a huge factor: same decisions, but the softmax saturates and the
    cross-entropy's gradient underflows to zero on every correctly classified image."""

    def __init__(self, model: nn.Module, scale: float = 1e5):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale
