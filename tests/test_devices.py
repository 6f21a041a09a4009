"""Device defaults: the gradient strategy read from a committed CUDA benchmark, and bf16 autocast
on a CPU only where it has native bf16."""

import json

import pytest
import torch

from pagcore.train.devices import cpu_has_native_bf16, default_fast_step, default_strategy, measured_cuda_strategy


def test_default_strategy_reads_the_newest_cuda_benchmark_of_this_gpu(tmp_path):
    assert default_strategy(torch.device("cpu"), tmp_path) == "loop"
    assert measured_cuda_strategy("NVIDIA H100 80GB HBM3", tmp_path) is None
    assert default_strategy(torch.device("cuda"), tmp_path) == "replicate"  # documented fallback, nothing measured

    def write(name, device, date, strategy):
        (tmp_path / name).write_text(json.dumps({"device": device, "date": date, "fastest_k10_strategy": strategy}))

    write("pag_step-cuda-H100-2026-12-01.json", "cuda: NVIDIA H100 80GB HBM3", "2026-12-01T10:00:00+00:00", "vmap")
    write("pag_step-cuda-H200-2026-12-05.json", "cuda: NVIDIA H200", "2026-12-05T10:00:00+00:00", "loop")
    write("pag_step-cuda-bad-2026-12-09.json", "cuda: NVIDIA H100 80GB HBM3", "2026-12-09", "warp-drive")
    assert measured_cuda_strategy("NVIDIA H100 80GB HBM3", tmp_path) == ("vmap", "pag_step-cuda-H100-2026-12-01.json")
    assert measured_cuda_strategy("NVIDIA H200", tmp_path)[0] == "loop"
    assert measured_cuda_strategy("NVIDIA A100-SXM4-40GB", tmp_path)[0] == "loop"  # no match: the newest
    if not torch.cuda.is_available():
        assert default_strategy(torch.device("cuda"), tmp_path) == "loop"


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse2 avx2 amx_tile amx_bf16", True),
        ("fpu sse2 avx2 avx512f avx512bw", False),
    ],
)
def test_bf16_autocast_is_the_cpu_default_only_with_native_bf16(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(cpuinfo) is native
    assert default_fast_step(torch.device("cpu"), cpuinfo) is native
    assert default_fast_step(torch.device("cuda"), cpuinfo) is True
    assert cpu_has_native_bf16(tmp_path / "absent") is False  # no /proc (macOS): float32
