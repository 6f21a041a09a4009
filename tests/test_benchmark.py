"""The benchmark script runs (a smoke run: its numbers are not checked, only produced)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pag_step_benchmark_runs_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pag_step.py"), "--device", "cpu", "--width", "4",
         "--batch-size", "8", "--iters", "1", "--warmup", "0", "--pgd-images", "16", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x vanilla" in out.stdout and "PGD-20" in out.stdout
    saved = json.loads(next(tmp_path.glob("pag_step-cpu-*.json")).read_text())
    names = set(saved["results"])
    assert {"vanilla", "official-style k=10", "pagcore k=10 loop", "pagcore k=10 vmap", "pagcore k=10 replicate"} <= names
    best = saved["fastest_k10_strategy"]
    assert {f"pagcore k={k} {best}" for k in (1, 2, 5)} <= names
    for result in saved["results"].values():
        assert result["seconds"] > 0 and result["flops"] > 0
    assert saved["device"].startswith("cpu") and saved["git"]
