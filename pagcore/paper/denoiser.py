"""A class-conditional denoiser, the score model behind the later paper's score-based targets.

For images x in [0, 1] and noise of standard deviation σ (in the same pixel units as the book's
attack radii), a denoiser D(x_σ, σ, y) estimates the clean image from x_σ = x + σ ε. By Tweedie's
formula the score of the noised class-conditional distribution is

    ∇ log p_σ(x_σ | y) = (D(x_σ, σ, y) - x_σ) / σ²,

and one network trained with the label dropped on a fraction of its examples (the label then
reads :attr:`Denoiser.null_class`) is also the unconditional denoiser D(x_σ, σ, ∅). The
gradient of the log-posterior of its implicit classifier, the score-based target of a class
y_t, is the difference of the two scores (:func:`log_posterior_gradients`):

    ∇ log p_σ(y_t | x_σ) = ∇ log p_σ(x_σ | y_t) - ∇ log p_σ(x_σ) = (D(x_σ, σ, y_t) - D(x_σ, σ, ∅)) / σ².

The network is a small U-Net. It is wrapped in the preconditioning of Karras et al. (2022):
its input is scaled to unit variance at every σ and its output mixed with the noisy input, so
that one network serves a wide range of σ with targets of unit variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pagcore.base.validation import ConfigError, check_positive, check_positive_int

DATA_MEAN = 0.5
"""Images are centred on this value before the network sees them (the middle of [0, 1])."""

DATA_STD = 0.25
"""The spread of centred natural images in [0, 1], per pixel: the σ_data of the preconditioning."""


@dataclass(frozen=True)
class DenoiserShape:
    """The U-Net's size: ``width`` channels at full resolution, times ``multipliers[i]`` at the
    i-th halving of the resolution, ``blocks`` residual blocks per resolution."""

    # Width 16: in the pilot (benchmarks/results/denoiser_pilot-quality.json, two cores, 12 minutes
    # each) widths 16 and 32 reached the same denoising error and implicit-classifier accuracy (46 %
    # and 45 % of 200 test images) in the same time, and width 16 computes a target in a third of the time.
    width: int = 16
    multipliers: tuple[int, ...] = (1, 2, 2)
    blocks: int = 1

    def validate(self) -> DenoiserShape:
        check_positive_int("width", self.width)
        check_positive_int("blocks", self.blocks)
        if not self.multipliers or any(m < 1 for m in self.multipliers):
            raise ConfigError(f"multipliers must be positive integers, got {self.multipliers}")
        return self


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class _ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a residual path; the conditioning shifts and scales the features."""

    def __init__(self, channels_in: int, channels_out: int, embedding: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels_in), channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.condition = nn.Linear(embedding, 2 * channels_out)
        self.norm2 = nn.GroupNorm(_groups(channels_out), channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.condition(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class UNet(nn.Module):
    """The network inside :class:`Denoiser`: a noisy image (scaled to unit variance), its noise
    level and a label in, an image-shaped correction out.

    Labels run from 0 to ``num_classes``; the last, :attr:`null_class`, stands for "no label"."""

    def __init__(self, channels: int, num_classes: int, shape: DenoiserShape = DenoiserShape()):
        super().__init__()
        shape.validate()
        self.num_classes = num_classes
        embedding = 4 * shape.width
        self.noise_embedding = nn.Sequential(nn.Linear(32, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.label_embedding = nn.Embedding(num_classes + 1, embedding)
        self.stem = nn.Conv2d(channels, shape.width, 3, padding=1)
        widths = [shape.width * m for m in shape.multipliers]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        current, skips = shape.width, []
        for level, width in enumerate(widths):
            for _ in range(shape.blocks):
                self.down.append(_ResidualBlock(current, width, embedding))
                current = width
                skips.append(current)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(current, current, 3, stride=2, padding=1))
        self.middle = _ResidualBlock(current, current, embedding)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(shape.blocks):
                self.up.append(_ResidualBlock(current + skips.pop(), width, embedding))
                current = width
            self.upsample.append(nn.Identity() if level == 0 else nn.Upsample(scale_factor=2, mode="nearest"))
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(current), current), nn.SiLU(), nn.Conv2d(current, channels, 3, padding=1)
        )
        self.blocks = shape.blocks

    @property
    def null_class(self) -> int:
        return self.num_classes

    def _noise_features(self, noise_level: Tensor) -> Tensor:
        frequencies = torch.exp(torch.linspace(0, math.log(1000), 16, device=noise_level.device))
        angles = noise_level[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, x: Tensor, noise_level: Tensor, labels: Tensor) -> Tensor:
        embedding = self.noise_embedding(self._noise_features(noise_level)) + self.label_embedding(labels)
        h, skips = self.stem(x), []
        blocks = iter(self.down)
        for downsample in self.downsample:
            for _ in range(self.blocks):
                h = next(blocks)(h, embedding)
                skips.append(h)
            h = downsample(h)
        h = self.middle(h, embedding)
        blocks = iter(self.up)
        for upsample in self.upsample:
            for _ in range(self.blocks):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), embedding)
            h = upsample(h)
        return self.head(h)


class Denoiser(nn.Module):
    """D(x_σ, σ, y): the U-Net behind Karras et al.'s preconditioning, in [0, 1] pixel units.

    ``labels`` hold classes 0 ... C-1, or :attr:`null_class` for the unconditional denoiser."""

    def __init__(self, channels: int, num_classes: int, shape: DenoiserShape = DenoiserShape()):
        super().__init__()
        self.network = UNet(channels, num_classes, shape)

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @property
    def null_class(self) -> int:
        return self.network.null_class

    def forward(self, noisy: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        sigma = sigma.to(noisy).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(len(noisy))
        variance = sigma**2 + DATA_STD**2
        c_skip = (DATA_STD**2 / variance)[:, None, None, None]
        c_out = (sigma * DATA_STD / variance.sqrt())[:, None, None, None]
        c_in = (1 / variance.sqrt())[:, None, None, None]
        centred = noisy - DATA_MEAN
        estimate = c_skip * centred + c_out * self.network(c_in * centred, sigma.log() / 4, labels)
        return estimate + DATA_MEAN


def denoising_loss(denoiser: Denoiser, images: Tensor, sigma: Tensor, labels: Tensor, noise: Tensor) -> Tensor:
    """The preconditioned denoising loss: the squared error of D(x + σ ε), ε = ``noise``, weighted
    so that every σ contributes on the same scale."""
    noisy = images + sigma[:, None, None, None] * noise
    weight = (sigma**2 + DATA_STD**2) / (sigma * DATA_STD) ** 2
    error = (denoiser(noisy, sigma, labels) - images).square().flatten(1).mean(1)
    return (weight * error).mean()


def log_posterior_gradients(denoiser: Denoiser, noisy: Tensor, sigma: float, classes: Tensor) -> Tensor:
    """∇ log p_σ(y | x_σ) for every class of ``classes`` ``(B, k)``: shape ``(B, k, *image)``.

    One forward pass of B·(k + 1) images: the k conditional denoisers and the unconditional one."""
    check_positive("sigma", sigma)
    batch, k = classes.shape
    null = torch.full((batch, 1), denoiser.null_class, dtype=classes.dtype, device=classes.device)
    labels = torch.cat([classes, null], dim=1).reshape(-1)
    repeated = noisy.unsqueeze(1).expand(batch, k + 1, *noisy.shape[1:]).reshape(-1, *noisy.shape[1:])
    estimates = denoiser(repeated, torch.full((len(labels),), sigma, device=noisy.device), labels)
    estimates = estimates.reshape(batch, k + 1, *noisy.shape[1:])
    return (estimates[:, :k] - estimates[:, k:]) / sigma**2


def seeded_noise(rows: range, shape: tuple[int, ...], draw: int = 0) -> Tensor:
    """Standard normal noise for the images ``rows`` of a dataset, one seeded generator per image
    and ``draw``: the noise of an image does not depend on the batch or chunk it is computed in."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(1_000_003 * draw + i)) for i in rows]
    )
