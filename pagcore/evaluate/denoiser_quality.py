"""How good a trained denoiser is, before its score-based targets are trusted.

Two questions, on a seeded subset of the test set:

* **Does it denoise?** The mean squared error per pixel of its estimate of the clean image, at
  each of several noise levels σ, conditional (true label) and unconditional, beside:
  the noisy image itself (error σ²), the optimal linear (Gaussian) denoiser, and the exact
  optimal denoiser of the training set (:mod:`pagcore.paper.reference_denoisers`), which
  memorises: it wins on training images and loses on test images at small σ.
* **Does it know the classes?** Its implicit classifier: a test image is given the label whose
  conditional denoiser explains it best, i.e. the smallest denoising error summed over noise
  levels and draws weighted by 1/σ² (the same draws for every label, so that the labels are
  compared on equal terms). Score-based targets carry class information only if this
  classifier beats chance.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from pagcore.base.modes import eval_mode
from pagcore.data import ImageDataset, as_float
from pagcore.paper.denoiser import Denoiser
from pagcore.paper.reference_denoisers import EmpiricalDenoiser, GaussianDenoiser

SIGMAS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
"""The noise levels at which the quality is measured (pixel units, images in [0, 1])."""


def _mse(estimate: Tensor, clean: Tensor) -> float:
    return (estimate - clean).square().mean().item()


def _denoised(denoiser: Denoiser, noisy: Tensor, sigma: float, labels: Tensor, batch_size: int, device) -> Tensor:
    sigma_tensor = torch.tensor(sigma, device=device)
    return torch.cat(
        [
            denoiser(noisy[i : i + batch_size].to(device), sigma_tensor, labels[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(noisy), batch_size)
        ]
    )


@torch.no_grad()
def denoising_errors(
    denoiser: Denoiser,
    data: ImageDataset,
    rows: Tensor,
    sigmas: Sequence[float] = SIGMAS,
    *,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Per σ, the error of the denoiser (``conditional``, ``unconditional``) and of the references
    (``noisy``, ``gaussian``, ``empirical``) on the test images ``rows``; one seeded noise draw
    per image and σ, shared by all."""
    clean, labels = as_float(data.x_test[rows]), data.y_test[rows]
    gaussian = GaussianDenoiser(data.x_train, data.y_train, data.num_classes)
    empirical = EmpiricalDenoiser(data.x_train, data.y_train, data.num_classes)
    generator = torch.Generator().manual_seed(seed)
    errors: dict[str, dict[str, float]] = {}
    with eval_mode(denoiser):
        for sigma in sigmas:
            noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
            null = torch.full_like(labels, denoiser.null_class)
            estimates = {
                "conditional": _denoised(denoiser, noisy, sigma, labels, batch_size, device),
                "unconditional": _denoised(denoiser, noisy, sigma, null, batch_size, device),
            }
            estimates["noisy"] = noisy
            estimates["gaussian"] = gaussian(noisy, sigma)
            estimates["empirical"] = empirical(noisy, sigma)
            errors[f"{sigma:g}"] = {name: _mse(estimate, clean) for name, estimate in estimates.items()}
    return errors


@torch.no_grad()
def implicit_classifier_accuracy(
    denoiser: Denoiser,
    images: Tensor,
    labels: Tensor,
    sigmas: Sequence[float] = SIGMAS,
    *,
    draws: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 20,
) -> dict:
    """The accuracy of the denoiser's implicit classifier on ``images`` (and its predictions).
    ``batch_size`` images (each with every label) go through the network at once: all of them at
    once would hold the activations of images × classes copies, some 17 GB for 200 STL-10 images."""
    clean = as_float(images).to(device)
    batch, classes = len(clean), denoiser.num_classes
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(batch, classes, device=device)
    with eval_mode(denoiser):
        for sigma in sigmas:
            for _ in range(draws):
                # Drawn for every image at once, so the draws do not depend on the batch size.
                noisy = clean + sigma * torch.randn(clean.shape, generator=generator).to(device)
                for start in range(0, batch, batch_size):
                    rows = slice(start, start + batch_size)
                    count = len(clean[rows])
                    labels_each = torch.arange(classes, device=device).repeat(count)
                    estimate = denoiser(
                        noisy[rows].repeat_interleave(classes, dim=0), torch.tensor(sigma, device=device), labels_each
                    )
                    error = (estimate - clean[rows].repeat_interleave(classes, dim=0)).square().flatten(1).sum(1)
                    loss[rows] += error.view(count, classes) / sigma**2
    predictions = loss.argmin(1).cpu()
    return {"accuracy": (predictions == labels).float().mean().item(), "predictions": predictions.tolist()}


def measure_denoiser(
    denoiser: Denoiser,
    data: ImageDataset,
    *,
    images: int = 200,
    sigmas: Sequence[float] = SIGMAS,
    draws: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Both measurements on the same seeded subset of ``images`` test images, with what they cost."""
    rows = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed))[:images].sort().values
    started = time.perf_counter()
    errors = denoising_errors(denoiser, data, rows, sigmas, seed=seed, device=device)
    error_seconds = time.perf_counter() - started
    classifier = implicit_classifier_accuracy(
        denoiser, data.x_test[rows], data.y_test[rows], sigmas, draws=draws, seed=seed, device=device
    )
    return {
        "test_images": len(rows),
        "test_set": data.test_set,
        "errors": errors,
        "implicit_classifier": {"accuracy": classifier["accuracy"], "sigmas": list(sigmas), "draws": draws},
        "chance": 1 / data.num_classes,
        "seconds": {
            "errors": round(error_seconds, 3),
            "implicit_classifier": round(time.perf_counter() - started - error_seconds, 3),
        },
    }
