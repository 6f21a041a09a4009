"""ResNet-18 (He et al., 2016) with the input normalisation inside the model.

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


def build_model(dataset: str, num_classes: int = 10, *, width: int = 64) -> ResNet18:
    """The ResNet-18 this book uses for ``dataset`` (``width`` < 64 only for smoke tests)."""
    return ResNet18(num_classes, stem=STEM_FOR_DATASET[dataset], width=width)
