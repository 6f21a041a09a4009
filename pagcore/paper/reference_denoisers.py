"""Denoisers without a network, to measure a trained one against.

* :class:`EmpiricalDenoiser` is the exact optimal denoiser of the training set itself, seen as a
  distribution of point masses: E[x | x_σ] is a softmax-weighted average of the training images,
  with weights exp(-|x_σ - x_i|² / 2σ²). At small σ it returns the nearest training image, at
  large σ the (class) mean: the model-free representatives of the paper, as one family in σ.
  Its error on test images shows how much a denoiser that generalises must do better than
  memorising.
* :class:`GaussianDenoiser` is the optimal linear denoiser, that of a Gaussian with the data's
  mean and covariance: μ + Σ (Σ + σ² I)⁻¹ (x_σ - μ), the simple baseline.

Both take images in [0, 1] and return estimates of the clean image, as
:class:`~pagcore.paper.denoiser.Denoiser` does, and both have class-conditional versions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pagcore.base.validation import check_positive
from pagcore.data import as_float
from pagcore.paper.targets import class_indices


class EmpiricalDenoiser:
    """E[x | x_σ] under the empirical distribution of ``images`` (of class ``y`` when asked)."""

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int, chunk_size: int = 4096):
        self.images = as_float(images).flatten(1).double()
        self.norms = self.images.square().sum(1)
        self.members = class_indices(labels.cpu(), num_classes)
        self.shape, self.chunk_size = images.shape[1:], chunk_size

    def __call__(self, noisy: Tensor, sigma: float, label: int | None = None) -> Tensor:
        """The estimate for every image of ``noisy`` ``(B, *image)``, of class ``label`` or of any class."""
        check_positive("sigma", sigma)
        pool = self.images if label is None else self.images[self.members[label]]
        norms = self.norms if label is None else self.norms[self.members[label]]
        queries = noisy.flatten(1).double()
        # log weights -|q - p|²/2σ², without |q|², the same for every p of a query; a running
        # log-sum-exp over chunks of the pool keeps memory at one chunk's distances.
        top = torch.full((len(queries), 1), -torch.inf, dtype=torch.float64, device=queries.device)
        total = torch.zeros(len(queries), 1, dtype=torch.float64, device=queries.device)
        weighted = torch.zeros_like(queries)
        for start in range(0, len(pool), self.chunk_size):
            chunk = pool[start : start + self.chunk_size]
            logits = (2 * queries @ chunk.T - norms[start : start + self.chunk_size]) / (2 * sigma**2)
            new_top = torch.maximum(top, logits.amax(1, keepdim=True))
            rescale = torch.exp(top - new_top)
            weights = torch.exp(logits - new_top)
            total = total * rescale + weights.sum(1, keepdim=True)
            weighted = weighted * rescale + weights @ chunk
            top = new_top
        return (weighted / total).float().reshape(len(noisy), *self.shape)


class GaussianDenoiser:
    """The optimal linear denoiser: that of a Gaussian with the data's mean and covariance."""

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int):
        self.flat = as_float(images).flatten(1).double()
        self.shape = images.shape[1:]
        self.members = class_indices(labels.cpu(), num_classes)
        self.moments: dict[int | None, tuple[Tensor, Tensor, Tensor]] = {}

    def _moments_of(self, label: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and eigendecomposed covariance of the images (of class ``label``), computed once, when first needed."""
        if label not in self.moments:
            self.moments[label] = self._moments(self.flat if label is None else self.flat[self.members[label]])
        return self.moments[label]

    @staticmethod
    def _moments(flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean = flat.mean(0)
        centred = flat - mean
        # The covariance's eigenvectors are the centred images' right singular vectors. The thin
        # decomposition never forms the D x D covariance (D = 27,648 on STL-10: 6 GB, and an hour of
        # two cores), and a direction outside the images' span has eigenvalue 0 either way.
        _, singular, right = torch.linalg.svd(centred, full_matrices=False)
        return mean, singular.square() / max(len(flat) - 1, 1), right.T

    def __call__(self, noisy: Tensor, sigma: float, label: int | None = None) -> Tensor:
        check_positive("sigma", sigma)
        mean, eigenvalues, eigenvectors = self._moments_of(label)
        offset = noisy.flatten(1).double() - mean
        shrink = eigenvalues / (eigenvalues + sigma**2)
        estimate = mean + ((offset @ eigenvectors) * shrink) @ eigenvectors.T
        return estimate.float().reshape(len(noisy), *self.shape)
