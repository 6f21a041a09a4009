"""The pilot that chooses a dataset's `cpu` preset: step throughput on this machine, then short real runs.

    python benchmarks/cpu_pilot.py throughput                      # ~15 minutes on 2 idle cores
    python benchmarks/cpu_pilot.py accuracy --data .data/cifar10.npz --max-minutes 60
    python benchmarks/cpu_pilot.py throughput --dataset stl10 --widths 8 16 32
    python benchmarks/cpu_pilot.py accuracy --dataset stl10 --data .data/stl10.npz --epochs 40
    python benchmarks/cpu_pilot.py throughput --architecture vit --depth 4 --widths 32 64 --ks 0 2

**throughput** times pagcore's training step (``pagcore.train.trainer.training_step``) on batches of
the dataset's images, at the paper's batch size and twice it, for every combination the `cpu`
preset could pick: ResNet-18 width, k (target classes per image), batch size, fp32 or bf16
autocast, channels-last memory, and the gradient strategy.
Configurations are timed in interleaved rounds, so a change of machine load hits them all alike
and the ratios stay fair. Each PAG configuration also reports how far its loss terms, in bf16,
are from the fp32 ones on the same weights and batch. Results go to
benchmarks/results/cpu_pilot-throughput-<dataset>-<date>.json with the machine, torch and git sha.

**accuracy** trains short schedules of vanilla and class-mean models on the real dataset at
several widths, with the paper's optimiser and the step schedule, and records clean test accuracy
after every epoch. Runs live in their own store (benchmarks/pilot_runs/, kind "pilot", never shown
as results) and resume where they stopped: call it again, with a time budget, until all are done.
It then writes benchmarks/results/cpu_pilot-accuracy-<dataset>[-vit<D>].json from the stored histories of
the runs of that architecture, with
the accuracy of classifiers that see only the distances to the class means (a ceiling for
class-mean PAG models, see ``pagcore.evaluate.ceiling``).

With ``--architecture vit --depth D`` both parts measure the later version's ViT instead (D blocks;
``--widths`` are its width), whose cpu-scale size is the pilot's to choose.

This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pagcore.config import ExecutionConfig, TrainConfig  # noqa: E402
from pagcore.data import (  # noqa: E402
    as_float,  # noqa: E402
    load_dataset,
    synthetic_dataset,
)
from pagcore.evaluate.ceiling import distance_accuracies  # noqa: E402
from pagcore.paper import reported  # noqa: E402
from pagcore.paper.models import ARCHITECTURES, build_model  # noqa: E402
from pagcore.paper.objective import pag_loss, sample_target_classes  # noqa: E402
from pagcore.paper.targets import RepresentativeSource, class_mean_representatives  # noqa: E402
from pagcore.store.provenance import device_description, git_revision, utc_now, write_json_atomic  # noqa: E402
from pagcore.store.runs import RunStore  # noqa: E402
from pagcore.train.trainer import StepConfig, train, training_step  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PILOT_STORE = ROOT / "benchmarks" / "pilot_runs"
NUM_CLASSES = 10


# -- throughput ------------------------------------------------------------------------------------


def step_name(
    width: int,
    k: int,
    batch: int,
    bf16: bool,
    channels_last: bool,
    strategy: str,
    architecture: str = "resnet18",
    depth: int | None = None,
) -> str:
    """A throughput row's name, e.g. "w8 k2 b64 bf16 cl loop" (k = 0: the vanilla step), prefixed by
    "vit7 " for a ViT of 7 blocks."""
    prefix = f"vit{depth} " if architecture == "vit" else ""
    return f"{prefix}w{width} k{k} b{batch} {'bf16' if bf16 else 'fp32'}{' cl' if channels_last else ''} {strategy}"


def architecture_tag(args: argparse.Namespace) -> str:
    """The results files' suffix: none for the ResNet-18, "-vit<depth>" for a ViT."""
    return f"-vit{args.depth}" if args.architecture == "vit" else ""


def make_step(
    dataset: str,
    width: int,
    k: int | None,
    batch: int,
    bf16: bool,
    channels_last: bool,
    strategy: str,
    seed: int = 0,
    architecture: str = "resnet18",
    depth: int | None = None,
):
    """A closure running one training step on a fixed random batch of the dataset's image size."""
    torch.manual_seed(seed)
    model = build_model(dataset, NUM_CLASSES, width=width, architecture=architecture, depth=depth).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    data = synthetic_dataset(dataset, 2 * batch, 10, seed=seed)
    reps = class_mean_representatives(data.x_train, data.y_train, NUM_CLASSES, center=0.5)
    source = RepresentativeSource("class_mean", reps)
    lam = 0.0 if k == 0 else 0.4
    settings = StepConfig(
        num_classes=NUM_CLASSES,
        lam=lam,
        classes_per_image=k or None,
        strategy=strategy,
        amp=bf16,
        channels_last=channels_last,
    )
    images, labels = data.x_train[:batch], data.y_train[:batch]
    index = torch.arange(batch)
    counter = itertools.count()

    def step() -> None:
        generator = torch.Generator().manual_seed(next(counter))
        training_step(model, optimizer, images, labels, index, source, settings, generator)

    return step


def loss_precision(
    dataset: str, width: int, k: int, batch: int, architecture: str = "resnet18", depth: int | None = None
) -> dict[str, float]:
    """|bf16 - fp32| of the CE and cosine terms of Eq. (1) on the same weights and batch."""
    torch.manual_seed(0)
    model = build_model(dataset, NUM_CLASSES, width=width, architecture=architecture, depth=depth).train()
    data = synthetic_dataset(dataset, batch, 10, seed=1)
    reps = class_mean_representatives(data.x_train, data.y_train, NUM_CLASSES, center=0.5)
    x = as_float(data.x_train)
    classes = sample_target_classes(batch, NUM_CLASSES, k, generator=torch.Generator().manual_seed(0))
    targets = reps[classes] - x.unsqueeze(1)
    out = {}
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = pag_loss(model, x, data.y_train, classes, targets, 0.4, num_classes=NUM_CLASSES, strategy="loop")
        out["bf16" if bf16 else "fp32"] = (loss.cross_entropy.item(), loss.cosine.item())
    (ce32, cos32), (ce16, cos16) = out["fp32"], out["bf16"]
    # The cosine term is a sum of C terms of Eq. (2); per class the difference is a tenth of this.
    return {
        "ce_fp32": ce32,
        "ce_abs_diff": abs(ce16 - ce32),
        "cosine_fp32": cos32,
        "cosine_abs_diff": abs(cos16 - cos32),
    }


def time_configs(configs: dict[str, dict], rounds: int, steps: int, batch_of: dict[str, int]) -> dict[str, float]:
    """Images per second of every configuration: the median over interleaved rounds."""
    steps_fns = {name: make_step(**cfg) for name, cfg in configs.items()}
    for fn in steps_fns.values():  # warm-up: allocator, oneDNN primitive caches
        fn(), fn()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, fn in steps_fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            samples[name].append(steps * batch_of[name] / (time.perf_counter() - start))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {s[-1]:.0f}" for n, s in samples.items()), flush=True)
    return {name: statistics.median(s) for name, s in samples.items()}


def throughput(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    configs: dict[str, dict] = {}
    paper_batch = reported.BATCH_SIZE[args.dataset]

    model = {"architecture": args.architecture, "depth": args.depth}

    def add(width, k, batch=paper_batch, bf16=False, channels_last=False, strategy="loop"):
        name = step_name(width, k, batch, bf16, channels_last, strategy, **model)
        configs[name] = dict(
            dataset=args.dataset,
            width=width,
            k=k,
            batch=batch,
            bf16=bf16,
            channels_last=channels_last,
            strategy=strategy,
            **model,
        )
        return name

    # k = 0 is the vanilla step (no PAG term).
    for width in args.widths:
        for k in args.ks:
            for bf16 in (False, True):
                add(width, k, bf16=bf16)
        if args.architecture == "resnet18":  # the ViT has one convolution, its patch embedding
            add(width, 2, bf16=True, channels_last=True)
        for strategy in ("vmap", "replicate"):
            add(width, 2, bf16=True, strategy=strategy)
    for batch in args.batches if args.batches is not None else [2 * paper_batch]:
        if batch != paper_batch:
            add(args.widths[0], 0, batch=batch, bf16=True)
            add(args.widths[0], 2, batch=batch, bf16=True)
    batch_of = {name: cfg["batch"] for name, cfg in configs.items()}
    started = utc_now()
    speeds = time_configs(configs, args.rounds, args.steps, batch_of)

    rows = []
    for name, cfg in configs.items():
        baseline = step_name(cfg["width"], 2, paper_batch, False, False, "loop", **model)  # float32 PAG step
        vanilla = step_name(cfg["width"], 0, cfg["batch"], cfg["bf16"], False, "loop", **model)
        row = {**cfg, "name": name, "images_per_s": round(speeds[name], 1)}
        if baseline in speeds:
            row["speedup_vs_fp32_loop_k2"] = round(speeds[name] / speeds[baseline], 3)
        if vanilla in speeds and cfg["k"]:
            row["cost_vs_vanilla"] = round(speeds[vanilla] / speeds[name], 2)
        rows.append(row)
    precision = {
        f"w{w} k{k}": loss_precision(args.dataset, w, k, paper_batch, **model)
        for w in args.widths
        for k in args.ks
        if k
    }
    record = {
        "what": "images/s of pagcore.train.trainer.training_step on the dataset's images"
        " (median of interleaved rounds)",
        "dataset": args.dataset,
        **model,
        "batch": paper_batch,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "loss_bf16_vs_fp32": precision,
        "device": device_description(torch.device("cpu")),
        "torch": torch.__version__,
        "git_sha": git_revision(),
        "started": started,
        "finished": utc_now(),
    }
    tag = architecture_tag(args)
    out = args.out / f"cpu_pilot-throughput-{args.dataset}{tag}-{started[:10]}.json"
    write_json_atomic(out, record)
    for row in rows:
        speedup = f"x{row['speedup_vs_fp32_loop_k2']:.2f} vs fp32 loop k2" if "speedup_vs_fp32_loop_k2" in row else ""
        cost = f"cost {row['cost_vs_vanilla']:.2f}x vanilla" if "cost_vs_vanilla" in row else ""  # vanilla rows: none
        print(f"{row['name']:32s} {row['images_per_s']:8.1f} img/s  {speedup:22s}  {cost}")
    print(f"saved {out}")


# -- accuracy --------------------------------------------------------------------------------------


def pilot_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The pilot's runs: the `cpu` scale's method and schedule shape at each width, short schedules."""
    configs = []
    for width in args.widths:
        for source in args.sources:
            knobs = {"scale": "cpu", "dataset": args.dataset, "epochs": args.epochs, "width": width}
            if args.architecture == "vit":
                knobs.update(architecture="vit", depth=args.depth)
            if source == "vanilla":
                knobs["objective"] = "cross_entropy"
            else:
                knobs.update(objective="pag", source=source, classes_per_image=args.k)
            configs.append(TrainConfig.from_flat(knobs))
    return configs


def accuracy(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data)
    store = RunStore(PILOT_STORE)
    deadline = time.perf_counter() + 60 * args.max_minutes if args.max_minutes else None
    for config in pilot_configs(args):
        minutes_left = None if deadline is None else (deadline - time.perf_counter()) / 60
        if minutes_left is not None and minutes_left <= 0.5:
            break
        options = ExecutionConfig(
            device="cpu",
            amp=args.bf16,
            channels_last=args.channels_last,
            kind="pilot",
            max_minutes=minutes_left,
            evaluate=False,
            checkpoint_every=100,
        )
        result = train(config, data, store, options)
        if not result.finished:
            break
    summary = []
    for run in store.runs():
        if run.params.get("kind") != "pilot" or run.params["dataset"] != args.dataset:
            continue
        # One file per architecture: the ResNet's widths choose its preset, the ViT's another.
        if (run.params.get("architecture", "resnet18"), run.params.get("depth")) != (args.architecture, args.depth):
            continue
        history = run.history or []
        summary.append(
            {
                "run": run.name,
                "objective": run.params["objective"],
                "source": run.params.get("source"),
                "width": run.params["width"],
                "k": run.params.get("classes_per_image"),
                "lam": run.params.get("lam"),
                "epochs_done": len(history),
                "epochs": run.params["epochs"],
                "test_accuracy": [round(h["test_accuracy"], 4) for h in history],
                "train_accuracy": [round(h["train_accuracy"], 4) for h in history],
                "seconds_per_epoch": [h["seconds"] for h in history],
            }
        )
    write_json_atomic(
        RESULTS / f"cpu_pilot-accuracy-{args.dataset}{architecture_tag(args)}.json",
        {
            "what": f"clean test accuracy ({data.test_set}) after every epoch of short pilot schedules",
            "dataset": args.dataset,
            "runs": summary,
            "class_mean_distance_accuracy": distance_accuracies(data),
            "device": device_description(torch.device("cpu")),
            "torch": torch.__version__,
            "git_sha": git_revision(),
            "written": utc_now(),
            "bf16": args.bf16,
            "channels_last": args.channels_last,
            "threads": torch.get_num_threads(),
        },
    )
    for row in summary:
        print(row["run"], row["epochs_done"], "/", row["epochs"], row["test_accuracy"][-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--dataset", choices=("cifar10", "stl10"), default="cifar10")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 10], help="0 = the vanilla step")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes beyond the paper's (default: twice it)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON (default: benchmarks/results)")
    p.set_defaults(func=throughput)
    a = sub.add_parser("accuracy")
    a.add_argument("--dataset", choices=("cifar10", "stl10"), default="cifar10")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    a.add_argument("--sources", nargs="+", default=["vanilla", "class_mean"], help="vanilla or a PAG target source")
    a.add_argument("--epochs", type=int, default=20)
    a.add_argument("--k", type=int, default=2)
    a.add_argument("--bf16", action="store_true")
    a.add_argument("--channels-last", action="store_true")
    a.add_argument("--max-minutes", type=float)
    a.add_argument("--threads", type=int, default=2)
    a.set_defaults(func=accuracy)
    for part in (p, a):
        part.add_argument("--architecture", choices=ARCHITECTURES, default="resnet18")
        part.add_argument(
            "--depth", type=int, default=None, help="ViT: transformer blocks (the --widths are its width)"
        )
    args = parser.parse_args()
    if args.architecture == "vit" and args.depth is None:
        parser.error("a ViT pilot needs --depth")
    args.func(args)


if __name__ == "__main__":
    main()
