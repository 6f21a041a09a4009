"""The classifiers: ResNet-18 (He et al., 2016) and a small Vision Transformer (Dosovitskiy et
al., 2021), the later paper's second architecture, each with the input normalisation inside.

The model takes [0, 1] pixels, so attacks, target gradients and PAG pictures all live in
pixel space. Normalisation is ``(x - 0.5) / 0.5``, the [-1, 1] scaling of the authors' code.
A single scalar std keeps the geometry of pixel space: the input-gradient w.r.t. the pixels
is the gradient w.r.t. the normalised input times 2, so its direction, the only thing
Eq. (2) looks at, does not depend on where the normalisation sits. Per-channel statistics
would tilt it.

Two stems:

* ``"cifar"`` for 32x32 inputs: a 3x3 stride-1 convolution and no max-pool, the usual CIFAR
  variant (also the one in the authors' released code);
* ``"imagenet"`` for STL-10's 96x96 inputs: the original 7x7 stride-2 convolution and 3x3
  stride-2 max-pool. It divides 96 by 4, so the four stages see 24, 12, 6 and 3 pixel maps,
  close to the 32, 16, 8, 4 of the CIFAR model on CIFAR images, at a similar cost per image.
  The CIFAR stem on 96x96 images would cost 9 times more for every one of the k+1 passes of
  a PAG step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pagcore.base.validation import check_choice
from pagcore.data import SPECS

ARCHITECTURES: tuple[str, ...] = ("resnet18", "vit")
STEMS: tuple[str, ...] = ("cifar", "imagenet")
STEM_FOR_DATASET = {"cifar10": "cifar", "stl10": "imagenet"}


class Normalize(nn.Module):
    def __init__(self, mean: float = 0.5, std: float = 0.5):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 on [0, 1] pixels: BasicBlocks [2, 2, 2, 2], widths 64..512, a linear head."""

    def __init__(self, num_classes: int = 10, stem: str = "cifar", width: int = 64):
        super().__init__()
        check_choice("stem", stem, STEMS)
        self.normalize = Normalize()
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
        stages, channels = [], width
        for i, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1))
            )
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.stages(self.stem(self.normalize(x)))
        return self.head(torch.flatten(self.pool(features), 1))


class Attention(nn.Module):
    """Multi-head self-attention written out (softmax(QKᵀ/√d) V). The PAG loss differentiates the
    input-gradient again, and fused attention kernels may not support a second backward pass; these
    plain operations do, on every device, and under ``torch.func.vmap``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"the width ({width}) must be a multiple of the heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / (width // self.heads) ** 0.5, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, tokens, width))


class TransformerBlock(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


VIT_HEAD_WIDTH = 32
"""Channels per attention head: the authors' ViT has width 384 and 12 heads."""

VIT_PATCH: dict[str, int] = {"cifar10": 4, "stl10": 12}
"""Patch side per dataset: 64 patches of an image on both (32/4 and 96/12 patches a side)."""


class ViT(nn.Module):
    """A Vision Transformer on [0, 1] pixels: square patches embedded linearly, a class token, learned
    position embeddings, ``depth`` pre-norm blocks (heads of :data:`VIT_HEAD_WIDTH` channels, an MLP as
    wide as the model, as in the authors' configuration), and a linear head on the class token."""

    def __init__(self, num_classes: int, image_size: int, patch: int, width: int, depth: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"the image side ({image_size}) must be a multiple of the patch ({patch})")
        self.normalize = Normalize()
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(0.02 * torch.randn(1, 1 + (image_size // patch) ** 2, width))
        heads = max(1, width // VIT_HEAD_WIDTH)
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads, width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        patches = self.embed(self.normalize(x)).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), patches], dim=1) + self.position
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def build_model(
    dataset: str, num_classes: int = 10, *, width: int = 64, architecture: str = "resnet18", depth: int | None = None
) -> nn.Module:
    """The classifier this book uses for ``dataset``: its ResNet-18 (``width`` < 64 only for smoke
    tests and the cpu scale), or the ViT of ``width`` and ``depth``."""
    check_choice("architecture", architecture, ARCHITECTURES)
    if architecture == "vit":
        return ViT(num_classes, SPECS[dataset].image_size, VIT_PATCH[dataset], width, depth)
    return ResNet18(num_classes, stem=STEM_FOR_DATASET[dataset], width=width)
