"""The pilot that chooses the denoiser's size, noise levels and training length on this machine.

    python benchmarks/denoiser_pilot.py throughput                 # a few minutes on 2 idle cores
    python benchmarks/denoiser_pilot.py quality --data .data/cifar10.npz --minutes 20

**throughput** times one training step of the denoiser (:mod:`pagcore.train.denoiser`) at each
candidate size, in fp32 and under bf16 autocast, in interleaved rounds so that a change of machine
load hits every size alike; and the cost of the score-based targets of one image (one denoiser
forward per class and one unconditional), from which it projects the time of the whole training
set's table. It prints images per second and the ratios to the smallest size, and writes
benchmarks/results/denoiser_pilot-throughput-<date>.json with the machine, torch and git sha.

**quality** trains each candidate for ``--minutes`` (pilot runs in benchmarks/pilot_runs/denoisers,
resumable, never shown as results) and measures its denoising error and implicit classifier on a
seeded test subset, writing benchmarks/results/denoiser_pilot-quality.json.

This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pagcore.base.deadline import Deadline  # noqa: E402
from pagcore.data import as_float, load_dataset, synthetic_dataset  # noqa: E402
from pagcore.evaluate.denoiser_quality import measure_denoiser  # noqa: E402
from pagcore.paper.denoiser import log_posterior_gradients  # noqa: E402
from pagcore.store.provenance import device_description, running_revision  # noqa: E402
from pagcore.store.runs import RunStore  # noqa: E402
from pagcore.train.denoiser import DenoiserConfig, build_denoiser, load_denoiser, train_denoiser  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PILOT_STORE = ROOT / "benchmarks" / "pilot_runs" / "denoisers"

# The candidate sizes: U-Net width, channel multipliers per resolution, residual blocks per resolution.
CANDIDATES = {
    "w16": dict(width=16, multipliers=[1, 2, 2], blocks=1),
    "w32": dict(width=32, multipliers=[1, 2, 2], blocks=1),
    "w32-b2": dict(width=32, multipliers=[1, 2, 2], blocks=2),
    "w48": dict(width=48, multipliers=[1, 2, 2], blocks=1),
}


def _step_seconds(config: DenoiserConfig, images: torch.Tensor, labels: torch.Tensor, bf16: bool) -> float:
    model = build_denoiser(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sigma = torch.full((len(images),), 0.2)
    noise = torch.randn_like(images)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        estimate = model(images + sigma[:, None, None, None] * noise, sigma, labels)
    loss = (estimate.float() - images).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def _target_seconds(config: DenoiserConfig, images: torch.Tensor) -> float:
    """Seconds for the score-based targets of ``images`` for every class."""
    model = build_denoiser(config).eval()
    classes = torch.arange(model.num_classes).expand(len(images), -1)
    started = time.perf_counter()
    with torch.no_grad():
        log_posterior_gradients(model, images, 0.2, classes)
    return time.perf_counter() - started


def throughput(args: argparse.Namespace) -> dict:
    data = synthetic_dataset("cifar10", args.batch_size, 10, seed=0)
    images, labels = as_float(data.x_train), data.y_train
    configs = {name: DenoiserConfig(**CANDIDATES[name], batch_size=args.batch_size) for name in args.candidates}
    timings: dict[str, list[float]] = {f"{name} {p}": [] for name in configs for p in ("fp32", "bf16")}
    targets: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved: every configuration sees the same load
        for name, config in configs.items():
            for precision in ("fp32", "bf16"):
                timings[f"{name} {precision}"].append(_step_seconds(config, images, labels, precision == "bf16"))
            targets[name].append(_target_seconds(config, images[: args.target_images]))
    base = statistics.median(timings[f"{next(iter(configs))} fp32"])
    rows = {}
    for key, seconds in timings.items():
        median = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)  # the first round warms up
        rows[key] = {"step_seconds": round(median, 4), "images_per_second": round(args.batch_size / median, 1)}
        rows[key]["relative_to_smallest_fp32"] = round(median / base, 2)
    for name, seconds in targets.items():
        per_image = statistics.median(seconds) / args.target_images
        rows[f"{name} targets"] = {
            "seconds_per_image": round(per_image, 4),
            "cifar10_table_hours": round(per_image * 50_000 / 3600, 2),
        }
    for key, row in rows.items():
        print(f"{key:>16}: {row}", flush=True)
    chosen = {name: CANDIDATES[name] for name in args.candidates}
    return {"batch_size": args.batch_size, "rounds": args.rounds, "candidates": chosen, "results": rows}


def quality(args: argparse.Namespace) -> dict:
    data = load_dataset("cifar10", args.data)
    store, results = RunStore(PILOT_STORE), {}
    for name in args.candidates:
        config = DenoiserConfig(**CANDIDATES[name], epochs=args.epochs)
        run, finished = train_denoiser(config, data, store, deadline=Deadline.after(args.minutes), kind="pilot")
        denoiser = load_denoiser(run) if finished else None
        if denoiser is None:  # not finished: measure the moving average reached so far
            denoiser = build_denoiser(config)
            denoiser.load_state_dict(run.load_checkpoint()["ema"])
        measured = measure_denoiser(denoiser.eval(), data, images=args.images)
        results[name] = {
            "run": run.name,
            "epochs_done": len(run.history),
            "wall_seconds": run.record["wall_seconds"],
            **measured,
        }
        print(name, json.dumps(results[name]["implicit_classifier"]), flush=True)
    return {"minutes_each": args.minutes, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("throughput")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--target-images", type=int, default=16)
    q = commands.add_parser("quality")
    q.add_argument("--data", required=True)
    for command in (p, q):
        command.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
        command.add_argument("--out", type=Path, default=RESULTS, help="folder of the results' JSON")
    q.add_argument("--epochs", type=int, default=10, help="the schedule a candidate would follow")
    q.add_argument("--minutes", type=float, default=20.0, help="training time per candidate in this pilot")
    q.add_argument("--images", type=int, default=200, help="test images of the quality measurement")
    args = parser.parse_args()
    started = time.perf_counter()
    result = throughput(args) if args.command == "throughput" else quality(args)
    result.update(
        machine=device_description("cpu"),
        torch=torch.__version__,
        git=running_revision(),
        date=datetime.date.today().isoformat(),
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    suffix = f"-{result['date']}" if args.command == "throughput" else ""
    path = args.out / f"denoiser_pilot-{args.command}{suffix}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
