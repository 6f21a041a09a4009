"""Which device a run uses, and the gradient strategy that is fastest there."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) is CUDA when there is one, else the CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_strategy(device: torch.device) -> str:
    """The gradient strategy used when none is asked for.

    On CPU, benchmarks/pag_step.py measured "loop" fastest (ResNet-18 width 8, batch 64, k=10:
    58 images/s against 44 for "vmap" and 34 for "replicate"; benchmarks/results/
    pag_step-cpu-2026-11-21.json). On CUDA the default is "replicate", whose single B*k batch
    should keep a GPU busiest; it is unmeasured until the benchmark has run on a GPU.
    """
    return "replicate" if device.type == "cuda" else "loop"
