"""The standard augmentation of Appendix C.2, per image and batched on the batch's device.

Each image gets its own random crop (after zero-padding by 4 pixels) and its own horizontal
flip with probability 1/2. Drawing the transform (:func:`random_crop_flip`) is separate from
applying it (:class:`CropFlip`), so that one draw can be applied to the images and then to
their target gradients: both are linear in the pixels, which keeps ``T(r) - T(x)`` equal to
``T(r - x)`` (see :mod:`pagcore.paper.targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CropFlip:
    """One batch's crop offsets ``(B,)``, flips ``(B,)`` and padding."""

    top: Tensor
    left: Tensor
    flip: Tensor
    padding: int

    def __call__(self, images: Tensor) -> Tensor:
        """Apply to ``(B, *extra, H, W)``: every leading slice of sample i gets sample i's transform."""
        batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        flat = images.reshape(batch, -1, height, width)
        p = self.padding
        padded = F.pad(flat, (p, p, p, p))
        channels = flat.shape[1]
        device = images.device
        rows = self.top.unsqueeze(1) + torch.arange(height, device=device)  # (B, H)
        cols = self.left.unsqueeze(1) + torch.arange(width, device=device)  # (B, W)
        cols = torch.where(self.flip.unsqueeze(1), cols.flip(1), cols)
        out = padded.gather(2, rows.view(batch, 1, height, 1).expand(batch, channels, height, width + 2 * p))
        out = out.gather(3, cols.view(batch, 1, 1, width).expand(batch, channels, height, width))
        return out.view(images.shape)


def random_crop_flip(
    batch_size: int,
    *,
    padding: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> CropFlip:
    """Draw one batch's transform: offsets uniform in 0..2*padding, flips with probability 1/2."""
    offsets = torch.randint(0, 2 * padding + 1, (2, batch_size), generator=generator, device=device)
    flip = torch.rand(batch_size, generator=generator, device=device) < 0.5
    return CropFlip(top=offsets[0], left=offsets[1], flip=flip, padding=padding)
