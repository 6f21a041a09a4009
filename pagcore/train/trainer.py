"""Training on real data (Appendix C.2): cross-entropy, PAG with any target source, Madry AT.

:func:`train` runs one :class:`~pagcore.config.TrainConfig` to completion, or as far as a time
budget allows, in the run store. It is resumable at step granularity: all randomness of step s
of epoch e (batch order, augmentation, sampled target classes, attack starts) comes from
generators seeded by (seed, epoch, step), so a run resumed from any checkpoint, in this process
or in a fresh clone on another machine, computes exactly what an uninterrupted run would have.

The pieces, each small:

* :func:`training_step`: one SGD step of Eq. (1) on a batch gathered on the device;
* :class:`Trainer`: the state of one training session (model, optimiser, position, the
  epoch's running sums) with ``restore``, ``run_epoch``, ``checkpoint`` and ``finish``;
* :func:`train`: resolve, validate, open the run, loop, record the session.

Devices and the step's precision: :mod:`pagcore.train.devices`. Stop requests: :mod:`pagcore.base.interrupts`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from pagcore.base.deadline import Deadline
from pagcore.base.interrupts import stop_requests
from pagcore.base.progress import counter_bar
from pagcore.base.seeds import derived_seed
from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig, ObjectiveConfig, TrainConfig
from pagcore.data import ImageDataset, as_float
from pagcore.evaluate.final import EvaluationConfig, clean_accuracy, evaluate_run
from pagcore.paper.attacks import PGD
from pagcore.paper.augment import random_crop_flip
from pagcore.paper.models import build_model
from pagcore.paper.objective import PagLoss, pag_loss, sample_target_classes
from pagcore.paper.rigd import PrecomputedGradients, TeacherOnTheFly
from pagcore.paper.targets import TargetSource, build_target_source
from pagcore.store.runs import Run, RunStore, run_name
from pagcore.store.sessions import SessionRecord
from pagcore.train.denoiser import denoiser_store, load_denoiser
from pagcore.train.devices import default_fast_step, default_strategy, resolve_device
from pagcore.train.score_targets import SCORE_TARGETS_DIR, score_table


def step_generator(device: torch.device, *parts: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))


@dataclass
class StepConfig:
    """What a training step needs besides the batch: the loss's knobs and the device's."""

    num_classes: int
    lam: float
    classes_per_image: int | None = None
    gradient: str = "logit"
    strategy: str = "loop"
    augment: bool = True
    adversary: PGD | None = None
    noise_sigma: float = 0.0  # Gaussian noise added to every (augmented) training image
    amp: bool = False  # bf16 autocast for the forward and backward passes
    channels_last: bool = False


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    index: Tensor,
    source: TargetSource | None,
    settings: StepConfig,
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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.amp):
            x = settings.adversary(model, x, labels, generator=generator)
    if settings.noise_sigma > 0:
        # Not clipped to [0, 1]: the base classifier learns the very distribution it is smoothed over.
        x = x + settings.noise_sigma * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    classes = targets = None
    if settings.lam > 0:
        classes = sample_target_classes(
            len(x), settings.num_classes, settings.classes_per_image, generator=generator, device=device
        )
        targets = source.target_gradients(x, index, classes, transform)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.amp):
        loss = pag_loss(
            model,
            x,
            labels,
            classes,
            targets,
            settings.lam,
            num_classes=settings.num_classes,
            gradient=settings.gradient,
            strategy=settings.strategy,
        )
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    return PagLoss(loss.total.detach(), loss.cross_entropy.detach(), loss.cosine.detach(), loss.logits.detach())


@dataclass
class TrainResult:
    run: Run
    finished: bool  # False when the time budget or a stop request ended the session early


def kind_of(*, synthetic: bool, subset: bool) -> str:
    """``real`` for the full real dataset; synthetic data or a subset makes a smoke run. Decidable
    before any data is read, so that ``pagcore table`` can check every row first."""
    return "smoke" if synthetic or subset else "real"


def run_kind(config: TrainConfig, data: ImageDataset) -> str:
    subset = bool(config.data.train_subset or config.data.test_subset)
    return kind_of(synthetic=data.source.startswith("synthetic"), subset=subset)


def check_trainable(config: TrainConfig, kind: str, store: RunStore | None = None) -> None:
    """Real runs only at a final preset: a provisional one may still change, and its runs with it.
    Given the run ``store``, a score-based run also needs its denoiser there (:func:`score_denoiser`)."""
    if kind == "real" and not config.preset.final:
        raise ConfigError(
            f"the {config.scale!r} preset is provisional ({config.preset.note}); real runs wait for it "
            "(pass kind='pilot' to train a pilot run)"
        )
    if store is not None and config.objective.has_pag_term and config.objective.source == "score":
        score_denoiser(config.objective, config.data.dataset, store, kind)


def run_identity(config: TrainConfig, kind: str) -> dict[str, Any]:
    """What names a run: its resolved configuration and its kind, so that a smoke run can never
    be resumed, reused or shown as the real run of the same configuration."""
    return {**config.identity(), "kind": kind}


def run_name_for(config: TrainConfig, kind: str) -> str:
    """The run-store name of a resolved config: readable parameters, the kind, a hash of the identity."""
    readable = config.readable_name() + ("" if kind == "real" else f"-{kind}")
    return run_name(readable, run_identity(config, kind))


def open_run(store: RunStore, config: TrainConfig, kind: str) -> Run:
    """The run of a resolved config in ``store``, created on first use."""
    return store.create(run_name_for(config, kind), run_identity(config, kind))


def score_denoiser(o: ObjectiveConfig, dataset: str, store: RunStore, kind: str) -> Run:
    """The denoiser run a ``score`` source names, checked before any work: complete, of the same
    dataset, of a kind a run of ``kind`` may use (a real run needs a real denoiser), and trained
    over a range of noise levels that holds ``o.score_sigma``."""
    try:
        run = denoiser_store(store.root).find(o.denoiser)
    except FileNotFoundError as missing:
        raise ConfigError(f"{missing}: train it with python -m pagcore denoiser") from None
    params = run.params
    if not run.trained:
        raise ConfigError(f"denoiser {run.name} is not trained yet: python -m pagcore denoiser")
    if params.get("dataset") != dataset:
        raise ConfigError(f"denoiser {run.name} learned {params.get('dataset')}, not {dataset}")
    if kind == "real" and run.kind != "real":
        raise ConfigError(f"a real run needs a real denoiser; {run.name} is a {run.kind} run")
    if not params["sigma_min"] <= o.score_sigma <= params["sigma_max"]:
        raise ConfigError(
            f"score_sigma {o.score_sigma} lies outside the noise levels denoiser {run.name} was trained on "
            f"[{params['sigma_min']}, {params['sigma_max']}]"
        )
    return run


def score_source(
    o: ObjectiveConfig, data: ImageDataset, store: RunStore, device: torch.device, progress: bool
) -> PrecomputedGradients:
    """Score-based targets from the denoiser run ``o.denoiser`` (in the denoisers' store beside
    ``store``), read from or added to the table cache of the repository's data folder (for real
    data; synthetic data is computed in memory)."""
    run = denoiser_store(store.root).find(o.denoiser)
    denoiser = load_denoiser(run, device)
    cache = None
    if not data.source.startswith("synthetic"):
        images = hashlib.sha256(data.x_train.cpu().numpy().tobytes()).hexdigest()[:12]
        name = f"{run.name}-sigma{o.score_sigma:g}-draws{o.score_draws}-{data.name}-{images}.npy"
        cache = SCORE_TARGETS_DIR / name
    table = score_table(
        denoiser, data.x_train.cpu(), o.score_sigma, draws=o.score_draws, cache=cache, device=device, progress=progress
    )
    return PrecomputedGradients(table.to(device), name="score")


def build_source(
    config: TrainConfig, data: ImageDataset, store: RunStore, device: torch.device, progress: bool
) -> TargetSource | None:
    """The target source of a config whose loss has the PAG term, on ``device``; None for the others."""
    o = config.objective
    if not o.has_pag_term:
        return None
    if o.source == "score":
        return score_source(o, data, store, device, progress)
    if o.source != "rigd":
        # center 0.5: rescaled class means get an image-like norm in [-1, 1] space (see targets).
        return build_target_source(
            o.source,
            data.x_train,
            data.y_train,
            data.num_classes,
            seed=config.schedule.seed,
            pool_size=o.pool_size,
            rescale_class_mean=o.rescale_class_mean,
            center=0.5,
        ).to(device)
    teacher_run = store.find(o.teacher)
    if teacher_run.params.get("objective") != "adversarial":
        raise ConfigError(
            f"teacher {o.teacher!r} is not an adversarially trained run "
            f"(objective {teacher_run.params.get('objective')!r})"
        )
    teacher = teacher_run.load_model(device=device)
    if o.rigd_targets == "on_the_fly":
        return TeacherOnTheFly(teacher, o.gradient)
    return PrecomputedGradients.from_teacher(
        teacher, data.x_train, data.num_classes, gradient=o.gradient, device=device, progress=progress
    )


def initial_model(config: TrainConfig, num_classes: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.schedule.seed)
        d = config.data
        return build_model(d.dataset, num_classes, width=d.width, architecture=d.architecture, depth=d.depth)


def prepare_data(config: TrainConfig, data: ImageDataset) -> ImageDataset:
    if data.name != config.data.dataset:
        raise ConfigError(f"dataset is {config.data.dataset!r} but the data given is {data.name!r}")
    if config.data.train_subset or config.data.test_subset:
        data = data.subset(config.data.train_subset, config.data.test_subset)
    return data


class Trainer:
    """One training session of one run: explicit state, one method per phase.

    ``restore`` loads the latest checkpoint (if any); ``run_epoch`` trains until the epoch
    ends or ``should_stop`` says so; ``checkpoint`` saves the position; ``finish`` saves the
    final weights and drops the resumable checkpoint, which a finished run no longer needs.
    """

    SUMS = ("loss", "ce", "cos", "correct", "seen")

    def __init__(self, config: TrainConfig, data: ImageDataset, run: Run, store: RunStore, options: ExecutionConfig):
        self.config, self.data, self.run, self.options = config, data, run, options
        self.device = resolve_device(options.device)
        self.strategy = default_strategy(self.device) if options.strategy == "auto" else options.strategy
        fast = default_fast_step(self.device)
        self.amp = fast if options.amp is None else options.amp
        self.channels_last = fast if options.channels_last is None else options.channels_last
        self.model = initial_model(config, data.num_classes)
        s = config.schedule
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )
        self.epoch, self.step, self.history = 0, 0, []
        # Seconds the current epoch took in earlier sessions, and when this session's part of it began:
        # an epoch's time in the history is its whole time, however many sessions it spanned.
        self.earlier_epoch_seconds, self.segment_start = 0.0, time.perf_counter()
        self.sums = self._zero_sums()
        # Called after every checkpoint save; ``train`` uses it to keep record.json as current as the weights.
        self.after_checkpoint: Callable[[], None] | None = None
        self.x_train, self.y_train = data.x_train.to(self.device), data.y_train.to(self.device)
        self.source = build_source(
            config, replace(data, x_train=self.x_train, y_train=self.y_train), store, self.device, options.progress
        )
        self.settings = StepConfig(
            num_classes=data.num_classes,
            lam=config.objective.lam,
            classes_per_image=config.objective.classes_per_image,
            gradient=config.objective.gradient,
            strategy=self.strategy,
            augment=config.data.augment,
            adversary=self._adversary(),
            noise_sigma=config.objective.noise_sigma if config.objective.objective == "gaussian_noise" else 0.0,
            amp=self.amp,
            channels_last=self.channels_last,
        )
        self.steps_per_epoch = math.ceil(len(self.x_train) / s.batch_size)

    def _adversary(self) -> PGD | None:
        if self.config.objective.objective != "adversarial":
            return None
        a = self.config.adversary
        # Madry et al.: PGD with a random start and steps of eps/4 (2/255 for L-inf 8/255).
        return PGD(a.threat, a.eps, step_size=a.eps / 4, steps=a.steps, random_start=True, bounds=(0.0, 1.0))

    def _zero_sums(self) -> dict[str, Tensor]:
        return {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in self.SUMS}

    def restore(self) -> None:
        state = self.run.load_checkpoint("latest")
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
            if self.step > 0:
                self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
                self.earlier_epoch_seconds = state.get("epoch_seconds", 0.0)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def checkpoint(self) -> None:
        self.run.save_checkpoint(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "sums": {k: v.cpu() for k, v in self.sums.items()},
                "history": self.history,
                "epoch_seconds": self.epoch_seconds() if self.step > 0 else 0.0,
            }
        )
        if self.after_checkpoint:
            self.after_checkpoint()

    def epoch_seconds(self) -> float:
        """Wall time of the current epoch so far, earlier sessions included."""
        return self.earlier_epoch_seconds + time.perf_counter() - self.segment_start

    def run_epoch(self, should_stop, bar) -> bool:
        """Train the rest of the current epoch; True when it ended, False when stopped mid-way."""
        s = self.config.schedule
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr_at(self.epoch)
        order = torch.randperm(
            len(self.x_train), generator=torch.Generator().manual_seed(derived_seed(s.seed, self.epoch))
        )
        order = order.to(self.device)
        self.model.train()
        self.segment_start = time.perf_counter()
        every = self.options.checkpoint_every
        while self.step < self.steps_per_epoch:
            index = order[self.step * s.batch_size : (self.step + 1) * s.batch_size]
            generator = step_generator(self.device, s.seed, self.epoch, self.step)
            loss = training_step(
                self.model,
                self.optimizer,
                self.x_train[index],
                self.y_train[index],
                index,
                self.source,
                self.settings,
                generator,
            )
            for key, value in (("loss", loss.total), ("ce", loss.cross_entropy), ("cos", loss.cosine)):
                self.sums[key] += value * len(index)
            self.sums["correct"] += (loss.logits.argmax(1) == self.y_train[index]).sum()
            self.sums["seen"] += len(index)
            self.step += 1
            bar.update(len(index))
            if self.step == self.steps_per_epoch:
                break
            if every and self.step % every == 0:
                self.checkpoint()
            if should_stop():
                self.checkpoint()
                return False
        self._close_epoch(self.epoch_seconds())
        return True

    def _close_epoch(self, seconds: float) -> None:
        seen = self.sums["seen"].item()
        clean = clean_accuracy(self.model, self.data.x_test, self.data.y_test, device=self.device)
        self.history.append(
            {
                "epoch": self.epoch + 1,
                "lr": self.config.schedule.lr_at(self.epoch),
                "loss": self.sums["loss"].item() / seen,
                "cross_entropy": self.sums["ce"].item() / seen,
                "cosine": self.sums["cos"].item() / seen,
                "train_accuracy": self.sums["correct"].item() / seen,
                "test_accuracy": clean,
                "seconds": round(seconds, 3),
            }
        )
        self.epoch, self.step, self.sums = self.epoch + 1, 0, self._zero_sums()
        self.earlier_epoch_seconds = 0.0
        self.checkpoint()
        self.run.write_json("history.json", self.history)
        h = self.history[-1]
        self.run.log(
            f"epoch {h['epoch']}/{self.config.schedule.epochs}: loss {h['loss']:.4f}, train accuracy "
            f"{h['train_accuracy']:.4f}, test accuracy {h['test_accuracy']:.4f}, {h['seconds']:.0f} s"
        )

    def finish(self) -> None:
        """Final weights only (no optimiser): all a finished run needs, and small enough for git at CPU scale."""
        self.run.save_checkpoint({"model": self.model.state_dict(), "history": self.history}, which="final")
        self.run.checkpoint_path("latest").unlink(missing_ok=True)


def train(
    config: TrainConfig,
    data: ImageDataset,
    store: RunStore | None = None,
    options: ExecutionConfig | None = None,
    evaluation: EvaluationConfig | None = None,
) -> TrainResult:
    """Train ``config`` on ``data`` into ``store``, resuming the run if it already exists.

    ``options.max_minutes`` stops the session cleanly (checkpoint saved) once the budget is
    spent; calling again continues. A complete run is returned as is unless ``options.retrain``.
    Unless ``options.evaluate`` is False, the trained run is evaluated with ``evaluation`` (the
    paper's PGD-20 by default); a run trained earlier without it is evaluated, not retrained.
    """
    config = config.resolve()
    options = (options or ExecutionConfig()).validate()
    evaluation = (evaluation or EvaluationConfig()).validate()
    data = prepare_data(config, data)
    store = store or RunStore()
    kind = options.kind or run_kind(config, data)
    check_trainable(config, kind, store)
    run = open_run(store, config, kind)
    if options.retrain:
        run.clear()
    elif run.complete or (run.status == "trained" and not options.evaluate):
        return TrainResult(run, finished=True)

    device = resolve_device(options.device)
    session = SessionRecord.begin(run, {"kind": kind, "scale": config.scale, "data": data.source}, device)
    deadline = Deadline.after(options.max_minutes)
    try:
        if run.trained:  # trained before, not yet evaluated
            finished, model = True, run.load_model("final", device=device)
            session.entry["epochs"] = [config.schedule.epochs, config.schedule.epochs]
        else:
            finished, model = _train_session(Trainer(config, data, run, store, options), options, deadline, session)
        if finished and options.evaluate:
            evaluate_run(run, model, data, evaluation, device=device, progress=options.progress)
        session.save("interrupted" if not finished else ("complete" if options.evaluate else "trained"))
    except BaseException as error:  # an exception or Ctrl-C: on record, then raised as ever
        session.entry["ended"] = f"failed: {type(error).__name__}: {error}"
        session.save("interrupted")
        raise
    return TrainResult(run, finished=finished)


def _train_session(
    trainer: Trainer, options: ExecutionConfig, deadline: Deadline, session: SessionRecord
) -> tuple[bool, nn.Module]:
    """Restore ``trainer`` and train until the schedule ends (True) or the session is stopped (False)."""
    trainer.restore()
    session.entry.update(strategy=trainer.strategy, amp_bf16=trainer.amp, channels_last=trainer.channels_last)
    first_epoch = trainer.epoch

    def after_checkpoint() -> None:
        session.entry["epochs"] = [first_epoch, trainer.epoch]
        session.save("running")

    trainer.after_checkpoint = after_checkpoint
    run = trainer.run
    run.log(
        f"session started on {session.entry['device']} at epoch {trainer.epoch}, step {trainer.step} "
        f"(git {session.entry['git']})"
    )
    finished = _train_until_done_or_stopped(trainer, options, deadline)
    stopped = f"stopped at epoch {trainer.epoch}, step {trainer.step}; run again to continue"
    run.log("training finished" if finished else stopped)
    session.entry["epochs"] = [first_epoch, trainer.epoch]
    if finished:
        trainer.finish()
    return finished, trainer.model


def _train_until_done_or_stopped(trainer: Trainer, options: ExecutionConfig, deadline: Deadline) -> bool:
    """Epochs until the schedule ends (True) or a stop request or the deadline ends the session (False)."""
    epochs, n = trainer.config.schedule.epochs, len(trainer.x_train)
    done = trainer.epoch * n + min(trainer.step * trainer.config.schedule.batch_size, n)
    with (
        stop_requests() as stop_requested,
        counter_bar(total=epochs * n, initial=done, enabled=options.progress, desc=trainer.run.name, unit="img") as bar,
    ):

        def should_stop() -> bool:
            return stop_requested.is_set() or deadline.passed()

        while trainer.epoch < epochs:
            if not trainer.run_epoch(should_stop, bar):
                return False
            if trainer.epoch < epochs and should_stop():
                return False
    return True
