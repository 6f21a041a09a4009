"""Training on real data (Appendix C.2): vanilla, PAG with any target source, and Madry AT.

:func:`train` runs one configuration to completion, or as far as a time budget allows, in
the run store. It is resumable at step granularity: all randomness of step s of epoch e
(batch order, augmentation, sampled target classes, attack starts) comes from generators
seeded by (seed, epoch, step), so a run resumed from any checkpoint computes exactly what an
uninterrupted run would have.

The per-step work lives in :func:`training_step`, which the benchmark times as well:

* the training images stay on the device as uint8 and batches are gathered by index;
* augmentation is drawn and applied per image, batched, on the device;
* the k input-gradients come from :func:`pagcore.objective.class_input_gradients`;
* on CUDA the forward and backward passes run under bf16 autocast with channels-last
  memory, while Eq. (2) is evaluated in float32;
* nothing in a step waits for the GPU: metrics accumulate in device tensors and are read
  once per epoch.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from .attacks import NORMS, PGD
from .augment import random_crop_flip
from .data import DATASETS, SPECS, ImageDataset
from .evaluation import STANDARD_EPS, evaluate, pag_pictures, paper_attacks
from .models import build_model
from .plotting import image_grid
from .objective import GRADIENT_KINDS, GRADIENT_STRATEGIES, PagLoss, pag_loss, sample_target_classes
from .progress import progress_bar
from .provenance import device_description, git_revision, utc_now
from .rigd import PrecomputedGradients, TeacherOnTheFly
from .runs import Run, RunStore, run_name
from .targets import MODEL_FREE_SOURCES, TargetSource, as_float, build_target_source
from .validation import (
    ConfigError,
    check_choice,
    check_classes_per_image,
    check_nonnegative,
    check_positive,
    check_positive_int,
)

METHODS: tuple[str, ...] = ("vanilla", *MODEL_FREE_SOURCES, "rigd", "adversarial")
"""``vanilla`` (cross-entropy, lambda = 0), the PAG sources, and Madry adversarial training
(used for RIGD teachers and as an extra comparison row beyond the paper)."""

# Table 3 of the paper: lambda per dataset and target source (both RIGD variants use 0.4).
PAPER_LAMBDA: dict[str, dict[str, float]] = {
    "cifar10": {"one_image": 0.5, "class_mean": 0.4, "nearest_neighbor": 0.4, "rigd": 0.4},
    "stl10": {"one_image": 0.25, "class_mean": 0.2, "nearest_neighbor": 0.4, "rigd": 0.4},
}
PAPER_BATCH_SIZE = {"cifar10": 64, "stl10": 32}
# Large-eps L2 radius of the PAG pictures; STL images have 9x the pixels of CIFAR's, hence 3x.
PICTURE_EPS = {"cifar10": 10.0, "stl10": 30.0}
RIGD_TARGETS = ("precompute", "on_the_fly")
RUN_KINDS = ("real", "smoke", "pilot")


@dataclass
class TrainConfig:
    """Everything that defines a training run (and hence its name in the run store).

    ``None`` fields take the paper's value for the dataset: lambda from Table 3 (0 for
    vanilla and adversarial training), batch 64 (CIFAR-10) or 32 (STL-10), the attack radius
    of Section 5.2 for adversarial training. The learning-rate schedule is not in the paper;
    the default follows the authors' released code: x0.1 from 50% of the epochs, x0.01 from 75%.
    """

    dataset: str = "cifar10"
    method: str = "class_mean"
    lam: float | None = None
    epochs: int = 100
    batch_size: int | None = None
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    lr_factors: list[float] = field(default_factory=lambda: [0.1, 0.01])
    seed: int = 0
    gradient: str = "logit"
    classes_per_image: int | None = None  # k; None = all C classes (Eq. 1's full sum)
    pool_size: int = 1000  # nearest-neighbour candidates per class
    rescale_class_mean: bool = True
    teacher: str = ""  # RIGD: run name or directory of an adversarially trained model
    rigd_targets: str = "precompute"
    adv_norm: str = "linf"  # adversarial training only
    adv_eps: float | None = None
    adv_steps: int = 7
    augment: bool = True
    width: int = 64  # ResNet-18 width; < 64 only for smoke tests
    train_subset: int | None = None  # first n training images; smoke tests only
    test_subset: int | None = None
    eval_pgd_steps: int = 20
    picture_images: int = 4
    picture_eps: float | None = None

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` default filled in from the paper."""
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        lam = self.lam
        if lam is None:
            lam = PAPER_LAMBDA[self.dataset].get(self.method, 0.0)
        adv_eps = self.adv_eps
        if adv_eps is None and self.adv_norm in NORMS:
            adv_eps = STANDARD_EPS[self.dataset][self.adv_norm]
        return replace(
            self,
            lam=lam,
            batch_size=self.batch_size or PAPER_BATCH_SIZE[self.dataset],
            adv_eps=adv_eps,
            picture_eps=self.picture_eps or PICTURE_EPS[self.dataset],
        )

    def validate(self) -> "TrainConfig":
        """Raise a ConfigError naming the first bad parameter (call on a resolved config)."""
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        check_nonnegative("lam", self.lam)
        if self.method in ("vanilla", "adversarial") and self.lam != 0:
            raise ConfigError(f"lam must be 0 for method {self.method!r} (it has no PAG term); got {self.lam}")
        if self.method not in ("vanilla", "adversarial") and self.lam == 0:
            raise ConfigError(f"lam must be > 0 for method {self.method!r}; use method='vanilla' for lam = 0")
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("weight_decay", self.weight_decay)
        if len(self.lr_milestones) != len(self.lr_factors) or any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError(
                "lr_milestones (fractions of the epochs, each in (0, 1)) and lr_factors must have the same "
                f"length; got {self.lr_milestones} and {self.lr_factors}"
            )
        check_choice("gradient", self.gradient, GRADIENT_KINDS)
        check_classes_per_image(self.classes_per_image, SPECS[self.dataset].num_classes)
        check_positive_int("pool_size", self.pool_size)
        if self.method == "rigd" and not self.teacher:
            raise ConfigError("teacher must name an adversarially trained run (run name or directory) for method 'rigd'")
        check_choice("rigd_targets", self.rigd_targets, RIGD_TARGETS)
        check_choice("adv_norm", self.adv_norm, NORMS)
        check_nonnegative("adv_eps", self.adv_eps)
        check_positive_int("adv_steps", self.adv_steps)
        check_positive_int("width", self.width)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_positive_int("eval_pgd_steps", self.eval_pgd_steps)
        check_positive_int("picture_images", self.picture_images)
        check_positive("picture_eps", self.picture_eps)
        return self

    def identity(self) -> dict[str, Any]:
        """Every field, teacher included (the run's name adds its kind, see run_name_for)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TrainConfig":
        """The config stored in a run's params.json (which also records the run's kind)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def readable_name(self) -> str:
        if self.method == "adversarial":
            return f"{self.dataset}-adversarial-{self.adv_norm}-e{self.epochs}-s{self.seed}"
        return f"{self.dataset}-{self.method}-lam{self.lam:g}-e{self.epochs}-s{self.seed}"

    def lr_at(self, epoch: int) -> float:
        """Step schedule: the factor of the last milestone (fraction of the epochs) passed."""
        factor = 1.0
        for milestone, f in zip(self.lr_milestones, self.lr_factors):
            if epoch >= milestone * self.epochs:
                factor = f
        return self.lr * factor


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, so that (seed, epoch, step) each get their own stream."""
    value = 0x9E3779B97F4A7C15
    for p in parts:
        value = (value * 6364136223846793005 + p + 1442695040888963407) % (1 << 63)
    return value


def step_generator(device: torch.device, *parts: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))


def default_strategy(device: torch.device) -> str:
    """The gradient strategy used when none is asked for.

    On CPU, benchmarks/pag_step.py measured "loop" fastest (ResNet-18 width 8, batch 64, k=10:
    58 images/s against 44 for "vmap" and 34 for "replicate"; benchmarks/results/
    pag_step-cpu-2026-11-21.json). On CUDA the default is "replicate", whose single B*k batch
    should keep a GPU busiest; it is unmeasured until the benchmark has run on a GPU.
    """
    return "replicate" if device.type == "cuda" else "loop"


@dataclass
class StepSettings:
    """What a training step needs besides the batch: the loss's knobs and the device's."""

    num_classes: int
    lam: float
    classes_per_image: int | None = None
    gradient: str = "logit"
    strategy: str = "loop"
    augment: bool = True
    adversary: PGD | None = None
    autocast: bool = False
    channels_last: bool = False


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    index: Tensor,
    source: TargetSource | None,
    settings: StepSettings,
    generator: torch.Generator,
) -> PagLoss:
    """One SGD step of Eq. (1) on a batch of uint8 images gathered from the training set.

    ``index`` holds the batch's rows in the training set (nearest-neighbour and RIGD targets
    are looked up by it). Returns the loss terms, detached, still on the device.
    """
    device = images.device
    x = as_float(images)
    transform = None
    if settings.augment:
        transform = random_crop_flip(len(x), generator=generator, device=device)
        x = transform(x)
    if settings.adversary is not None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.autocast):
            x = settings.adversary(model, x, labels, generator=generator)
    classes = targets = None
    if settings.lam > 0:
        classes = sample_target_classes(len(x), settings.num_classes, settings.classes_per_image, generator=generator, device=device)
        targets = source.target_gradients(x, index, classes, transform)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.autocast):
        loss = pag_loss(
            model, x, labels, classes, targets, settings.lam,
            num_classes=settings.num_classes, kind=settings.gradient, strategy=settings.strategy,
        )
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    return PagLoss(loss.total.detach(), loss.cross_entropy.detach(), loss.cosine.detach(), loss.logits.detach())


@contextmanager
def stop_requests():
    """While active, SIGINT/SIGTERM ask the loop to stop after the current step.

    The loop then saves a checkpoint and returns instead of dying mid-update. A second
    signal interrupts at once. Outside the main thread signals cannot be caught; the
    context then does nothing.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class TrainResult:
    run: Run
    finished: bool  # False when the time budget or a stop request ended the session early


def load_run_model(run: Run, *, which: str = "final", device: torch.device | str = "cpu") -> nn.Module:
    """The model of a stored run, in eval mode, from its final (or latest) checkpoint."""
    params = run.params
    state = run.load_checkpoint(which, map_location=device)
    if state is None:
        raise FileNotFoundError(f"run {run.name} has no {which} checkpoint (checkpoints are not kept in git)")
    model = build_model(params["dataset"], SPECS[params["dataset"]].num_classes, width=params["width"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def build_source(
    config: TrainConfig, data: ImageDataset, store: RunStore, device: torch.device, progress: bool
) -> TargetSource | None:
    if config.method in ("vanilla", "adversarial"):
        return None
    if config.method in MODEL_FREE_SOURCES:
        # center 0.5: rescaled class means get an image-like norm in [-1, 1] space (see targets).
        return build_target_source(
            config.method, data.x_train, data.y_train, data.num_classes, seed=config.seed,
            pool_size=config.pool_size, rescale_class_mean=config.rescale_class_mean, center=0.5,
        ).to(device)
    teacher_run = store.find(config.teacher)
    if teacher_run.params.get("method") != "adversarial":
        raise ConfigError(f"teacher {config.teacher!r} is not an adversarially trained run (method {teacher_run.params.get('method')!r})")
    teacher = load_run_model(teacher_run, device=device)
    if config.rigd_targets == "on_the_fly":
        return TeacherOnTheFly(teacher, config.gradient)
    return PrecomputedGradients.from_teacher(
        teacher, data.x_train, data.num_classes, kind=config.gradient, device=device, progress=progress
    )


def initial_model(config: TrainConfig, num_classes: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.dataset, num_classes, width=config.width)


def prepare_data(config: TrainConfig, data: ImageDataset) -> ImageDataset:
    if data.name != config.dataset:
        raise ConfigError(f"dataset is {config.dataset!r} but the data given is {data.name!r}")
    if config.train_subset or config.test_subset:
        data = data.subset(config.train_subset, config.test_subset)
    return data


def run_kind(config: TrainConfig, data: ImageDataset) -> str:
    """``real`` only for the full real dataset at full width; anything else is a smoke run."""
    synthetic = data.source.startswith("synthetic")
    reduced = config.train_subset or config.test_subset or config.width != 64
    return "smoke" if synthetic or reduced else "real"


def train(
    config: TrainConfig,
    data: ImageDataset,
    store: RunStore | None = None,
    *,
    device: str | torch.device | None = None,
    strategy: str = "auto",
    amp: bool | None = None,
    progress: bool = True,
    checkpoint_every_steps: int | None = None,
    max_minutes: float | None = None,
    retrain: bool = False,
    final_evaluation: bool = True,
    kind: str | None = None,
    channels_last: bool | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` into ``store``, resuming the run if it already exists.

    ``max_minutes`` stops the session cleanly (checkpoint saved) once the budget is spent;
    calling again continues. A complete run is returned as is unless ``retrain``. ``kind``
    defaults to :func:`run_kind`; ``"pilot"`` marks the runs that choose a scale's preset
    (benchmarks/cpu_pilot.py), which, like smoke runs, are never shown as results.
    ``channels_last`` (default: on CUDA only) stores activations channels-last.
    """
    config = config.resolved().validate()
    if strategy != "auto":
        check_choice("strategy", strategy, GRADIENT_STRATEGIES)
    if checkpoint_every_steps is not None:
        check_positive_int("checkpoint_every_steps", checkpoint_every_steps)
    if max_minutes is not None:
        check_positive("max_minutes", max_minutes)
    data = prepare_data(config, data)
    store = store or RunStore()
    if kind is None:
        kind = run_kind(config, data)
    check_choice("kind", kind, RUN_KINDS)
    run = store.create(run_name_for(config, kind), run_identity(config, kind))
    if run.complete and not retrain:
        return TrainResult(run, finished=True)
    if retrain:
        for stale in ("checkpoint-latest.pt", "checkpoint-final.pt", "history.json", "metrics.json", "record.json"):
            (run.path / stale).unlink(missing_ok=True)

    device = resolve_device(device)
    strategy = default_strategy(device) if strategy == "auto" else strategy
    amp = (device.type == "cuda") if amp is None else amp
    channels_last = (device.type == "cuda") if channels_last is None else channels_last
    session_start, clock = utc_now(), time.perf_counter()
    deadline = clock + 60 * max_minutes if max_minutes else math.inf

    record = run.record or {"kind": kind, "data": data.source, "sessions": [], "wall_seconds": 0.0}
    record["status"] = "running"
    run.write_json("record.json", record)

    num_classes = data.num_classes
    model = initial_model(config, num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    state = run.load_checkpoint("latest")
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    epoch, step = (state["epoch"], state["step"]) if state else (0, 0)
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    start_epoch = epoch

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    source = build_source(config, replace(data, x_train=x_train, y_train=y_train), store, device, progress)
    adversary = None
    if config.method == "adversarial":
        # Madry et al.: PGD with a random start; 7 steps of eps/4 (2/255 for L-inf 8/255).
        adversary = PGD(config.adv_norm, config.adv_eps, step_size=config.adv_eps / 4, steps=config.adv_steps,
                        random_start=True, bounds=(0.0, 1.0))
    settings = StepSettings(
        num_classes=num_classes, lam=config.lam, classes_per_image=config.classes_per_image,
        gradient=config.gradient, strategy=strategy, augment=config.augment, adversary=adversary, autocast=amp,
        channels_last=channels_last,
    )
    n, batch = len(x_train), config.batch_size
    steps_per_epoch = math.ceil(n / batch)

    def zero_sums() -> dict[str, Tensor]:
        return {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("loss", "ce", "cos", "correct", "seen")}

    sums = {k: v.to(device) for k, v in state["sums"].items()} if state and step > 0 else zero_sums()

    def checkpoint(next_epoch: int, next_step: int) -> None:
        run.save_checkpoint({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": next_epoch, "step": next_step,
            "sums": {k: v.cpu() for k, v in sums.items()}, "history": history,
        })

    def close_session(status: str) -> None:
        seconds = time.perf_counter() - clock
        record["sessions"].append({
            "started": session_start, "finished": utc_now(), "device": device_description(device),
            "git": git_revision(), "torch": torch.__version__, "wall_seconds": round(seconds, 3),
            "epochs": [start_epoch, completed], "strategy": strategy, "amp_bf16": amp, "channels_last": channels_last,
        })
        record["wall_seconds"] = round(record["wall_seconds"] + seconds, 3)
        record["status"] = status
        run.write_json("record.json", record)

    stopped = False
    completed = epoch  # epochs fully done
    with stop_requests() as stop_requested:

        def out_of_time() -> bool:
            return stop_requested.is_set() or time.perf_counter() > deadline

        for epoch in progress_bar(range(epoch, config.epochs), enabled=progress, desc=run.name, unit="epoch"):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(epoch)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(config.seed, epoch))).to(device)
            model.train()
            epoch_clock = time.perf_counter()
            while step < steps_per_epoch:
                index = order[step * batch : (step + 1) * batch]
                generator = step_generator(device, config.seed, epoch, step)
                loss = training_step(model, optimizer, x_train[index], y_train[index], index, source, settings, generator)
                sums["loss"] += loss.total * len(index)
                sums["ce"] += loss.cross_entropy * len(index)
                sums["cos"] += loss.cosine * len(index)
                sums["correct"] += (loss.logits.argmax(1) == y_train[index]).sum()
                sums["seen"] += len(index)
                step += 1
                if step == steps_per_epoch:
                    break
                if checkpoint_every_steps and step % checkpoint_every_steps == 0:
                    checkpoint(epoch, step)
                if out_of_time():
                    break
            if step < steps_per_epoch:  # stopped mid-epoch
                checkpoint(epoch, step)
                stopped = True
                break
            seen = sums["seen"].item()
            clean = evaluate(model, data.x_test, data.y_test, {}, device=device, progress=False)["clean"]
            history.append({
                "epoch": epoch + 1, "lr": config.lr_at(epoch),
                "loss": sums["loss"].item() / seen, "cross_entropy": sums["ce"].item() / seen,
                "cosine": sums["cos"].item() / seen, "train_accuracy": sums["correct"].item() / seen,
                "test_accuracy": clean, "seconds": round(time.perf_counter() - epoch_clock, 3),
            })
            completed, step, sums = epoch + 1, 0, zero_sums()
            checkpoint(completed, 0)
            run.write_json("history.json", history)
            if completed < config.epochs and out_of_time():
                stopped = True
                break

    if stopped:
        close_session("interrupted")
        return TrainResult(run, finished=False)

    run.save_checkpoint({"model": model.state_dict(), "history": history}, which="final")
    if final_evaluation:
        finish_run(run, model, data, config, device=device, progress=progress)
    close_session("complete" if final_evaluation else "trained")
    return TrainResult(run, finished=True)


def run_identity(config: TrainConfig, kind: str) -> dict[str, Any]:
    """What names a run: its configuration and its kind, so that a smoke run can never be
    resumed, reused or shown as the real run of the same configuration."""
    return {**config.identity(), "kind": kind}


def run_name_for(config: TrainConfig, kind: str = "real") -> str:
    """The run-store name of a resolved config (``-smoke`` marks smoke runs)."""
    readable = config.readable_name() + ("-smoke" if kind == "smoke" else "")
    return run_name(readable, run_identity(config, kind))


def finish_run(
    run: Run,
    model: nn.Module,
    data: ImageDataset,
    config: TrainConfig,
    *,
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Final evaluation (clean, PGD-k L-inf and L2 on the whole test set, float32) and the PAG pictures."""
    start = time.perf_counter()
    attacks = paper_attacks(config.dataset, config.eval_pgd_steps)
    metrics = evaluate(
        model, data.x_test, data.y_test, attacks, device=device, seed=config.seed, progress=progress,
    )
    metrics["test_images"] = len(data.x_test)
    metrics["pgd_steps"] = config.eval_pgd_steps
    metrics["attacks"] = {name: attack.settings() for name, attack in attacks.items()}
    metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
    run.write_json("metrics.json", metrics)

    chosen = first_of_each_class(data.y_test, config.picture_images)
    grid = pag_pictures(model, data.x_test[chosen], data.num_classes, eps=config.picture_eps, device=device)
    run.artifacts.mkdir(parents=True, exist_ok=True)
    torch.save({"grid": grid.half(), "test_index": chosen.cpu()}, run.artifacts / "pag_grid.pt")
    figure = image_grid(grid, column_labels=("input", *data.class_names))
    figure.savefig(run.artifacts / "pag_grid.png", dpi=100)
    plt.close(figure)
    return metrics


def first_of_each_class(labels: Tensor, count: int) -> Tensor:
    """Indices of the first test image of classes 0, 1, ..., count-1 (a fixed, varied choice)."""
    labels = labels.cpu()
    chosen = []
    for c in range(int(labels.max()) + 1):
        hits = torch.nonzero(labels == c).flatten()
        if len(hits):
            chosen.append(int(hits[0]))
        if len(chosen) == count:
            break
    return torch.tensor(chosen, dtype=torch.int64)
