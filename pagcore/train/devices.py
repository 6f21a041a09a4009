"""Which device a run uses, and the gradient strategy that is fastest there."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pagcore.paper.objective import GRADIENT_STRATEGIES

BENCHMARK_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
CPU_STRATEGY = "loop"
CUDA_FALLBACK_STRATEGY = "replicate"
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) is CUDA when there is one, else the CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo.

    Elsewhere (no such file, e.g. macOS) the answer is False: bf16 emulated in software is slower
    than float32, so only a CPU known to have it gets bf16 by default."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return bool(flags & BF16_CPU_FLAGS)


def default_fast_step(device: torch.device, cpuinfo: Path = CPUINFO) -> bool:
    """Whether the training step runs under bf16 autocast with channels-last activations by default.

    Always on CUDA. On a CPU only with native bf16: there benchmarks/cpu_pilot.py measured the PAG
    step (ResNet-18 width 8, batch 64, k = 2) at 483 images/s against 392 in float32, with the
    loss terms within 0.002 (cross-entropy) and 0.011 (cosine sum over 10 classes) of float32
    (benchmarks/results/cpu_pilot-throughput-cifar10-2026-11-22.json). Evaluation is float32 regardless.
    """
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16(cpuinfo))


def measured_cuda_strategy(gpu_name: str | None, results: Path = BENCHMARK_RESULTS) -> tuple[str, str] | None:
    """(strategy, file) from the newest committed CUDA run of benchmarks/pag_step.py, preferring one
    measured on a GPU of this name; None when no CUDA benchmark has been committed.

    The files are ``pag_step-cuda-*.json``; their ``fastest_k10_strategy`` is the strategy that
    was fastest at ResNet-18 width 64, batch 64, k = 10 (the paper-scale step)."""
    found = []
    for path in sorted(results.glob("pag_step-cuda-*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        strategy = payload.get("fastest_k10_strategy")
        if strategy not in GRADIENT_STRATEGIES:
            continue
        same_gpu = bool(gpu_name) and gpu_name in str(payload.get("device", ""))
        found.append((same_gpu, str(payload.get("date", "")), strategy, path.name))
    if not found:
        return None
    _, _, strategy, name = max(found)
    return strategy, name


def default_strategy(device: torch.device, results: Path = BENCHMARK_RESULTS) -> str:
    """The gradient strategy used when none is asked for.

    On CPU, benchmarks/pag_step.py measured "loop" fastest (ResNet-18 width 8, batch 64, k=10:
    58 images/s against 44 for "vmap" and 34 for "replicate"; benchmarks/results/
    pag_step-cpu-2026-11-21.json). On CUDA it is what the newest committed CUDA benchmark
    (``benchmarks/results/pag_step-cuda-*.json``, one from a GPU of the same name first) measured
    fastest; until one is committed, "replicate", whose single B*k batch should keep a GPU busiest.
    """
    if device.type != "cuda":
        return CPU_STRATEGY
    gpu_name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else None
    measured = measured_cuda_strategy(gpu_name, results)
    return measured[0] if measured else CUDA_FALLBACK_STRATEGY
