"""Benchmark: the cost of a PAG training step against a vanilla step and an official-style step.

    python benchmarks/pag_step.py                 # CUDA when present: ResNet-18, batch 64
    python benchmarks/pag_step.py --device cpu    # a narrow ResNet-18 and few iterations

In one run, with the same model, batch and device, it times

* a vanilla cross-entropy step;
* the official-style step (benchmarks/official_style.py: a Python loop over the batch, fp32);
* pagcore's step (pagcore.train.trainer.training_step) with k = 10 target classes per image under
  each gradient strategy, and with k = 1, 2 and 5 under the fastest one;
* pagcore's step with RIGD targets looked up from a precomputed table and computed by the
  teacher on the fly;
* PGD-20 (L-inf, the paper's evaluation attack) over test-sized batches;
* on request (CUDA only, each attempt recorded with its error if it fails): the fastest k = 10
  step under ``torch.compile`` (``--compile``) and replayed as a CUDA graph (``--cuda-graphs``),
  both of which must cope with the double backward of the PAG loss; vanilla and k = 10 steps at
  larger batches (``--batch-sizes``: a scaled learning rate would be a documented option, never
  the paper's setting); and N processes stepping side by side on one device (``--side-by-side N``:
  the aggregate images/s against one process, the case for filling an idle GPU with several runs).

For each it prints images/s, the ratio to vanilla and to the official-style step, peak memory
and model FLOP utilisation (counted FLOPs per second over the GPU's dense bf16 peak; fp32
variants count against the same peak, so theirs is a lower bound), and it saves everything, with the device, torch
version and git sha, to benchmarks/results/. This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_style import official_style_step  # noqa: E402

from pagcore.data import as_float  # noqa: E402
from pagcore.evaluate.final import evaluate  # noqa: E402
from pagcore.paper.attacks import PGD  # noqa: E402
from pagcore.paper.models import build_model  # noqa: E402
from pagcore.paper.objective import GRADIENT_STRATEGIES  # noqa: E402
from pagcore.paper.rigd import PrecomputedGradients, TeacherOnTheFly, unit_vectors  # noqa: E402
from pagcore.paper.targets import RepresentativeSource  # noqa: E402
from pagcore.store.provenance import device_description, git_revision, utc_now, write_json_atomic  # noqa: E402
from pagcore.train.devices import resolve_device  # noqa: E402
from pagcore.train.trainer import StepConfig, training_step  # noqa: E402

NUM_CLASSES = 10
# Dense bf16 tensor-core peaks (FLOP/s), for the utilisation estimate; the H100 PCIe card is slower
# than the SXM one, so it is matched first.
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "A40": 150e12, "L40": 181e12}
KNOWN_GPUS = ("H100", "H200", "A100", "A40", "L40")


def gpu_slug(name: str) -> str:
    """A short file-name tag for a GPU: "NVIDIA H100 80GB HBM3" -> "H100" (its last word would be "HBM3")."""
    known = next((gpu for gpu in KNOWN_GPUS if gpu in name), None)
    return known or "".join(c if c.isalnum() else "_" for c in name.split()[-1])


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


class FlopCount(TorchDispatchMode):
    """Sums the FLOPs of matmuls and convolutions as they run, double backward included.

    (torch's FlopCounterMode tracks modules with autograd hooks that refuse
    ``autograd.grad`` on leaf inputs, which every PAG step calls; this counts from the
    same per-op formulas without the module tracking.)
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, device: torch.device, iters: int, warmup: int, batch: int) -> dict:
    """Median seconds per call of ``step()`` (a step on ``batch`` images), its peak memory and its FLOPs."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    with FlopCount() as counter:
        step()
    synchronize(device)
    return {"seconds": statistics.median(times), "peak_bytes": peak, "flops": counter.total, "batch": batch}


def attempt(name: str, build, device: torch.device, iters: int, warmup: int, batch: int) -> dict:
    """``measure`` for the optional variants: a failure (unsupported double backward, capture
    errors) is recorded with its message instead of ending the benchmark."""
    try:
        return measure(build(), device, iters, warmup, batch)
    except Exception as error:  # noqa: BLE001 - any failure is a finding to record
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        print(f"{name}: failed: {message}", file=sys.stderr, flush=True)
        return {"error": message, "batch": batch}


def cuda_graph_step(step, device: torch.device, generator: torch.Generator):
    """``step`` captured once as a CUDA graph and replayed (static inputs: the same batch each time).

    The step draws from its own CUDA generator, which the graph must own to replay fresh random
    numbers; warm-up iterations run on a side stream first, as capture requires."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def side_by_side(processes: int, variant: str, args, device: torch.device, width: int) -> dict:
    """``processes`` copies of this script stepping ``variant`` at once on ``device``; they wait for
    each other at a file barrier after warming up, so the timed windows overlap."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as barrier:
        command = [
            sys.executable,
            __file__,
            "--worker",
            variant,
            "--barrier",
            barrier,
            "--workers",
            str(processes),
            "--device",
            str(device),
            "--width",
            str(width),
            "--batch-size",
            str(args.batch_size),
            "--iters",
            str(args.iters or 20),
            "--warmup",
            str(args.warmup if args.warmup is not None else 2),
        ]
        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    if any(w.returncode for w in workers):
        codes = [w.returncode for w in workers]
        return {"processes": processes, "variant": variant, "error": f"worker exit codes {codes}"}
    timings = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    images = sum(t["images"] for t in timings)
    window = max(t["end"] for t in timings) - min(t["start"] for t in timings)
    return {
        "processes": processes,
        "variant": variant,
        "aggregate_images_per_second": images / window,
        "per_process_images_per_second": [t["images"] / (t["end"] - t["start"]) for t in timings],
    }


def worker(args, device: torch.device, width: int) -> int:
    """One side-by-side process: warm up, wait at the barrier, time ``iters`` steps, print JSON."""
    import json

    cuda = device.type == "cuda"
    batch = args.batch_size
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    index = torch.arange(batch, device=device)
    source = RepresentativeSource("class_mean", torch.rand(NUM_CLASSES, 3, 32, 32, device=device))
    model = build_model("cifar10", NUM_CLASSES, width=width).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    strategy, lam = ("loop", 0.0) if args.worker == "vanilla" else (args.worker.rsplit(" ", 1)[-1], 0.4)
    settings = StepConfig(
        num_classes=NUM_CLASSES, lam=lam, classes_per_image=10, strategy=strategy, amp=cuda, channels_last=cuda
    )
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(args.warmup or 0):
        training_step(model, optimizer, images, labels, index, source, settings, generator)
    synchronize(device)
    Path(args.barrier, f"ready-{os.getpid()}").touch()
    deadline = time.time() + 300
    while len(list(Path(args.barrier).glob("ready-*"))) < args.workers and time.time() < deadline:
        time.sleep(0.01)
    start = time.time()
    for _ in range(args.iters):
        training_step(model, optimizer, images, labels, index, source, settings, generator)
    synchronize(device)
    print(json.dumps({"start": start, "end": time.time(), "images": args.iters * batch}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=None, help="ResNet-18 width (default: 64 on CUDA, 8 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per variant (default: 20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument(
        "--pgd-images", type=int, default=None, help="images for the PGD-20 timing (default: 10000 CUDA, 256 CPU)"
    )
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument(
        "--compile", action="store_true", help="CUDA: also time the fastest k=10 step under torch.compile"
    )
    parser.add_argument("--cuda-graphs", action="store_true", help="CUDA: also time it replayed as a CUDA graph")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also time vanilla and the fastest k=10 step at these batch sizes",
    )
    parser.add_argument(
        "--side-by-side",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time N processes stepping the fastest k=10 step at once, for each N",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    width = args.width or (64 if cuda else 8)
    iters = args.iters or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    pgd_images = args.pgd_images or (10_000 if cuda else 256)
    batch = args.batch_size
    torch.manual_seed(0)
    if args.worker:
        return worker(args, device, width)

    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    index = torch.arange(batch, device=device)
    representatives = RepresentativeSource("class_mean", torch.rand(NUM_CLASSES, 3, 32, 32, device=device))
    target_table = torch.randn(batch, NUM_CLASSES, 3, 32, 32, device=device)

    def fresh_model():
        torch.manual_seed(0)
        model = build_model("cifar10", NUM_CLASSES, width=width).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def pagcore_variant(
        k: int, strategy: str, source=representatives, lam: float = 0.4, size: int = batch, mode: str = "eager"
    ):
        model, optimizer = fresh_model()
        settings = StepConfig(
            num_classes=NUM_CLASSES, lam=lam, classes_per_image=k, strategy=strategy, amp=cuda, channels_last=cuda
        )
        generator = torch.Generator(device=device).manual_seed(0)
        x, y, rows = images, labels, index
        if size != batch:
            x = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, device=device)
            y = torch.randint(0, NUM_CLASSES, (size,), device=device)
            rows = torch.arange(size, device=device) % batch  # rows of the target table
        if mode == "compile":
            model = torch.compile(model)

        def step():
            return training_step(model, optimizer, x, y, rows, source, settings, generator)

        return cuda_graph_step(step, device, generator) if mode == "cuda_graph" else step

    def official_variant(k: int):
        model, optimizer = fresh_model()
        model = model.to(memory_format=torch.contiguous_format)
        generator = torch.Generator().manual_seed(0)
        x = as_float(images)
        return lambda: official_style_step(model, optimizer, x, labels, target_table, k=k, lam=0.4, generator=generator)

    variants: dict[str, object] = {
        "vanilla": pagcore_variant(NUM_CLASSES, "loop", lam=0.0),
        "official-style k=10": official_variant(10),
    }
    for strategy in GRADIENT_STRATEGIES:
        variants[f"pagcore k=10 {strategy}"] = pagcore_variant(10, strategy)

    results: dict[str, dict] = {}
    for name, step in variants.items():
        results[name] = measure(step, device, iters, warmup, batch)
        print(f"measured {name}: {results[name]['seconds'] * 1e3:.1f} ms/step", file=sys.stderr, flush=True)
    best = min(GRADIENT_STRATEGIES, key=lambda s: results[f"pagcore k=10 {s}"]["seconds"])
    for k in (1, 2, 5):
        results[f"pagcore k={k} {best}"] = measure(pagcore_variant(k, best), device, iters, warmup, batch)

    # RIGD targets: a lookup in a precomputed table against the teacher on every batch.
    teacher, _ = fresh_model()
    table = PrecomputedGradients(unit_vectors(torch.randn(batch, NUM_CLASSES, 3, 32, 32, device=device)).half())
    results[f"pagcore k=10 {best} RIGD precomputed"] = measure(
        pagcore_variant(10, best, source=table), device, iters, warmup, batch
    )
    results[f"pagcore k=10 {best} RIGD on the fly"] = measure(
        pagcore_variant(10, best, source=TeacherOnTheFly(teacher)), device, iters, warmup, batch
    )

    # The optional variants; compile and CUDA graphs only on CUDA, where they are meant to help.
    skipped: dict[str, str] = {}
    for flag, mode in ((args.compile, "compile"), (args.cuda_graphs, "cuda_graph")):
        name = f"pagcore k=10 {best} {mode}"
        if flag and cuda:
            results[name] = attempt(
                name, lambda mode=mode: pagcore_variant(10, best, mode=mode), device, iters, warmup, batch
            )
        elif flag:
            skipped[name] = "CUDA only"
    for size in args.batch_sizes:
        results[f"vanilla batch {size}"] = attempt(
            f"vanilla batch {size}",
            lambda size=size: pagcore_variant(10, "loop", lam=0.0, size=size),
            device,
            iters,
            warmup,
            size,
        )
        results[f"pagcore k=10 {best} batch {size}"] = attempt(
            f"k=10 batch {size}", lambda size=size: pagcore_variant(10, best, size=size), device, iters, warmup, size
        )
    parallel = [side_by_side(n, f"pagcore k=10 {best}", args, device, width) for n in args.side_by_side]
    for entry in parallel:
        if "aggregate_images_per_second" in entry:
            one = batch / results[f"pagcore k=10 {best}"]["seconds"]
            entry["speedup_over_one_process"] = entry["aggregate_images_per_second"] / one

    host_sync_free = None
    if cuda:
        # Any host-device synchronisation inside the step raises in this mode.
        step = pagcore_variant(10, best)
        step()
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            host_sync_free = True
        except RuntimeError as error:
            host_sync_free = False
            print(f"host synchronisation inside the step: {error}", file=sys.stderr)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    vanilla = results["vanilla"]["seconds"]
    official = results["official-style k=10"]["seconds"]
    peak = peak_flops(device)
    print(f"\nPAG step benchmark on {device_description(device)}; ResNet-18 width {width}, batch {batch}")
    columns = ("img/s", 9), ("x vanilla", 9), ("x official", 10), ("peak MiB", 9), ("TFLOP/s", 8), ("MFU", 6)
    print(f"{'variant':42s} " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:42s} failed: {r['error']}")
            continue
        r["images_per_second"] = r["batch"] / r["seconds"]
        # Ratios compare cost per image, so that variants at other batch sizes compare fairly.
        r["ratio_to_vanilla"] = (r["seconds"] / r["batch"]) / (vanilla / batch)
        r["speedup_over_official"] = (official / batch) / (r["seconds"] / r["batch"])
        r["flops_per_second"] = r["flops"] / r["seconds"]
        r["mfu"] = r["flops_per_second"] / peak if peak else None
        memory = f"{r['peak_bytes'] / 2**20:9.0f}" if r["peak_bytes"] is not None else f"{'n/a':>9s}"
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else f"{'n/a':>6s}"
        print(
            f"{name:42s} {r['images_per_second']:9.1f} {r['ratio_to_vanilla']:9.2f} {r['speedup_over_official']:10.2f} "
            f"{memory} {r['flops_per_second'] / 1e12:8.3f} {mfu}"
        )
    for entry in parallel:
        if "error" in entry:
            print(f"{entry['processes']} processes side by side: failed: {entry['error']}")
        else:
            print(
                f"{entry['processes']} processes side by side ({entry['variant']}): "
                f"{entry['aggregate_images_per_second']:.1f} img/s in all, "
                f"{entry['speedup_over_one_process']:.2f}x one process"
            )
    for name, why in skipped.items():
        print(f"{name:42s} skipped: {why}")

    # PGD-20 throughput on test-sized images (L-inf, the paper's evaluation attack).
    model, _ = fresh_model()
    test_images = torch.randint(0, 256, (pgd_images, 3, 32, 32), dtype=torch.uint8, device=device)
    test_labels = torch.randint(0, NUM_CLASSES, (pgd_images,), device=device)
    synchronize(device)
    start = time.perf_counter()
    evaluate(
        model,
        test_images,
        test_labels,
        {"linf": PGD.paper_real_data("linf", 8 / 255)},
        batch_size=500,
        device=device,
        progress=False,
    )
    synchronize(device)
    pgd_seconds = time.perf_counter() - start
    print(
        f"\nPGD-20 (L-inf) evaluation: {pgd_images} images in {pgd_seconds:.1f} s, "
        f"{pgd_images / pgd_seconds:.0f} images/s; 10,000 test images would take {1e4 * pgd_seconds / pgd_images:.0f} s"
    )

    k10 = results[f"pagcore k=10 {best}"]
    k2 = results[f"pagcore k=2 {best}"]
    projection = {
        name: math.ceil(50_000 / r["batch"]) * r["seconds"] * 100 / 60
        for name, r in results.items()
        if "error" not in r
    }
    goals = {
        "k=10 step <= 6x vanilla": k10["ratio_to_vanilla"] <= 6,
        "k=10 step >= 4x faster than official-style": k10["speedup_over_official"] >= 4,
        "k=2 step <= 2.5x vanilla": k2["ratio_to_vanilla"] <= 2.5,
    }
    print(
        f"\nfastest strategy for k=10: {best}; step free of host synchronisation: "
        f"{'n/a (CPU)' if host_sync_free is None else host_sync_free}"
    )
    for goal, met in goals.items():
        print(f"  {'met    ' if met else 'NOT met'}  {goal}")
    print(
        "projected 100 CIFAR-10 epochs (training steps only): "
        + ", ".join(
            f"{name} {minutes:.0f} min"
            for name, minutes in projection.items()
            if name in ("vanilla", "official-style k=10", f"pagcore k=10 {best}", f"pagcore k=2 {best}")
        )
    )
    if not cuda:
        print("(CPU, narrow model: these ratios test the script, they are not the GPU goals' figures)")

    payload = {
        "date": utc_now(),
        "device": device_description(device),
        "torch": torch.__version__,
        "git": git_revision(),
        "settings": {
            "width": width,
            "batch_size": batch,
            "iters": iters,
            "warmup": warmup,
            "amp_bf16": cuda,
            "channels_last": cuda,
            "pgd_images": pgd_images,
            "peak_bf16_flops": peak,
        },
        "results": results,
        "fastest_k10_strategy": best,
        "goals": goals,
        "host_sync_free": host_sync_free,
        "side_by_side": parallel,
        "skipped": skipped,
        "pgd20_linf": {"images": pgd_images, "seconds": pgd_seconds, "images_per_second": pgd_images / pgd_seconds},
        "projected_minutes_100_cifar_epochs": projection,
    }
    slug = "cuda-" + gpu_slug(torch.cuda.get_device_name(device)) if cuda else "cpu"
    out = Path(args.out) / f"pag_step-{slug}-{payload['date'][:10]}.json"
    write_json_atomic(out, payload)
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
