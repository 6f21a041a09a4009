"""The benchmark script runs (a smoke run: its numbers are not checked, only produced)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pag_step_benchmark_runs_on_cpu(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pag_step.py"),
            "--device",
            "cpu",
            "--width",
            "4",
            "--batch-size",
            "8",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--pgd-images",
            "16",
            "--out",
            str(tmp_path),
            "--batch-sizes",
            "16",
            "--side-by-side",
            "2",
            "--compile",
            "--cuda-graphs",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "x vanilla" in out.stdout and "PGD-20" in out.stdout
    saved = json.loads(next(tmp_path.glob("pag_step-cpu-*.json")).read_text())
    names = set(saved["results"])
    assert {
        "vanilla",
        "official-style k=10",
        "pagcore k=10 loop",
        "pagcore k=10 vmap",
        "pagcore k=10 replicate",
    } <= names
    best = saved["fastest_k10_strategy"]
    assert {f"pagcore k={k} {best}" for k in (1, 2, 5)} <= names
    for result in saved["results"].values():
        assert result["seconds"] > 0 and result["flops"] > 0
    assert saved["device"].startswith("cpu") and saved["git"]
    # The optional measurements: larger batches, processes side by side; compile and graphs are CUDA only.
    assert saved["results"]["vanilla batch 16"]["batch"] == 16
    assert saved["results"][f"pagcore k=10 {best} batch 16"]["images_per_second"] > 0
    [parallel] = saved["side_by_side"]
    assert parallel["processes"] == 2 and len(parallel["per_process_images_per_second"]) == 2
    assert parallel["aggregate_images_per_second"] > 0 and parallel["speedup_over_one_process"] > 0
    assert set(saved["skipped"]) == {f"pagcore k=10 {best} compile", f"pagcore k=10 {best} cuda_graph"}


def test_gpu_slug_names_the_gpu_model():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pag_step import PEAK_BF16, gpu_slug

    assert gpu_slug("NVIDIA H100 80GB HBM3") == "H100" and gpu_slug("NVIDIA H200") == "H200"
    assert gpu_slug("Tesla V100-SXM2-16GB") == "V100_SXM2_16GB"
    assert next(v for k, v in PEAK_BF16.items() if k in "NVIDIA H100 PCIe") == 756e12


def load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluation_cost_counts_fewer_passes_for_best_iterate_pgd_than_unpruned(tmp_path):
    from pagcore.config import ExecutionConfig, TrainConfig
    from pagcore.data import synthetic_dataset
    from pagcore.evaluate.final import EvaluationConfig
    from pagcore.store.runs import RunStore
    from pagcore.train.trainer import train

    cost = load_script("evaluation_cost")
    data = synthetic_dataset("cifar10", 32, 24)
    tiny = TrainConfig.from_flat({"objective": "cross_entropy", "epochs": 1, "width": 4, "batch_size": 16})
    run = train(
        tiny,
        data,
        RunStore(tmp_path),
        ExecutionConfig(progress=False),
        EvaluationConfig(pgd_steps=1, picture_images=1),
    ).run
    measured = cost.measure_run(run, data, images=20, autoattack=False)
    assert measured["images"] == 20 and set(measured["norms"]) == {"linf", "l2"}
    for norm in measured["norms"].values():
        assert norm["pgd20"]["image_passes"] == 20 * 20  # every image through every step
        strong = norm["pgd100x5"]
        assert strong["image_passes"] <= strong["unpruned_image_passes"] == 20 * (1 + 5 * 101)
        assert strong["passes_saved_ratio"] >= 1 and "autoattack" not in norm


def test_denoiser_pilot_throughput_runs_on_cpu(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "denoiser_pilot.py"), "throughput", "--batch-size", "4"]
    command += ["--rounds", "1", "--target-images", "1", "--candidates", "w16", "--out", str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = tmp_path.glob("denoiser_pilot-throughput-*.json")
    rows = json.loads(result.read_text())["results"]
    assert set(rows) == {"w16 fp32", "w16 bf16", "w16 targets"} and rows["w16 targets"]["cifar10_table_hours"] > 0


def test_cpu_pilot_throughput_measures_the_vit_beside_its_own_vanilla_step(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "cpu_pilot.py"), "throughput", "--architecture", "vit"]
    command += ["--depth", "1", "--widths", "8", "--ks", "0", "2", "--batches", "64", "--rounds", "1"]
    command += ["--steps", "1", "--threads", "1", "--out", str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    (result,) = tmp_path.glob("cpu_pilot-throughput-cifar10-vit1-*.json")
    record = json.loads(result.read_text())
    names = {row["name"] for row in record["rows"]}
    assert "vit1 w8 k0 b64 fp32 loop" in names and "vit1 w8 k2 b64 bf16 vmap" in names
    assert not any(" cl " in name for name in names)  # no channels-last row for the ViT
    pag = next(row for row in record["rows"] if row["name"] == "vit1 w8 k2 b64 fp32 loop")
    assert pag["cost_vs_vanilla"] > 0 and record["architecture"] == "vit"
