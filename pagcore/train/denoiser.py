"""Training the class-conditional denoiser of :mod:`pagcore.paper.denoiser`, resumably.

A denoiser run lives in the run store like a classifier run, in its own folder
(:data:`DENOISER_FOLDER` under ``runs/``), named by its parameters. It trains in sessions that
stop cleanly at a deadline or on SIGINT/SIGTERM, checkpointing the weights, their exponential
moving average (EMA), the optimiser and the position in the epoch; the next session continues
from there and draws the same batches, noise levels, noise and dropped labels as an
uninterrupted run would, since every draw is seeded by (seed, epoch, step).

Each step draws σ log-uniformly in [``sigma_min``, ``sigma_max``], flips half the images, and
replaces the label by the "no label" class with probability ``label_drop``. The final weights
are the EMA's.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from pagcore.base.deadline import Deadline
from pagcore.base.interrupts import stop_requests
from pagcore.base.progress import counter_bar
from pagcore.base.seeds import derived_seed
from pagcore.base.validation import ConfigError, check_choice, check_positive, check_positive_int
from pagcore.config import knob
from pagcore.data import SPECS, ImageDataset, as_float
from pagcore.evaluate.denoiser_quality import measure_denoiser
from pagcore.paper.denoiser import Denoiser, DenoiserShape, denoising_loss
from pagcore.store.provenance import device_description, running_revision, utc_now
from pagcore.store.runs import DEFAULT_ROOT, Run, RunStore, run_name
from pagcore.store.sessions import SessionRecord

DENOISER_FOLDER = "denoisers"
"""The run store of denoisers, under the classifiers' ``runs/``."""

CHANNELS = 3  # every dataset of the book is of RGB images

CHECKPOINT_SECONDS = 300.0
"""A session checkpoints at least this often, so that a killed process loses at most this much."""


@dataclass(frozen=True)
class DenoiserConfig:
    """Everything that defines a denoiser run (its identity)."""

    dataset: str = knob("cifar10", "the dataset whose training set the denoiser learns", choices=tuple(SPECS))
    width: int = knob(DenoiserShape.width, "U-Net channels at full resolution")
    multipliers: list[int] = knob(list(DenoiserShape.multipliers), "channels per resolution, as multiples of the width")
    blocks: int = knob(DenoiserShape.blocks, "residual blocks per resolution")
    sigma_min: float = knob(0.02, "smallest noise level trained (pixel units, images in [0, 1])")
    sigma_max: float = knob(1.0, "largest noise level trained; σ is drawn log-uniformly in between")
    label_drop: float = knob(0.15, "probability that a training example's label is replaced by 'no label'")
    # 25 epochs of the pilot's width take about 50 minutes on two cores (see DenoiserShape).
    epochs: int = knob(25, "training epochs")
    batch_size: int = knob(128, "batch size")
    lr: float = knob(2e-3, "Adam learning rate")
    ema_decay: float = knob(0.999, "decay of the weights' moving average, whose weights are kept")
    seed: int = knob(0, "seed of the initialisation and of every draw")

    @property
    def shape(self) -> DenoiserShape:
        return DenoiserShape(self.width, tuple(self.multipliers), self.blocks)

    def validate(self) -> DenoiserConfig:
        check_choice("dataset", self.dataset, tuple(SPECS))
        self.shape.validate()
        check_positive("sigma_min", self.sigma_min)
        if self.sigma_max <= self.sigma_min:
            raise ConfigError(f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min})")
        if not 0 < self.label_drop < 1:
            raise ConfigError(f"label_drop must lie strictly between 0 and 1, got {self.label_drop}")
        for name in ("epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        return self

    def identity(self) -> dict:
        return {**asdict(self), "model": "denoiser"}

    def run_name(self, kind: str = "real") -> str:
        prefix = "" if kind == "real" else f"{kind}-"
        readable = f"{prefix}{self.dataset}-denoiser-w{self.width}-e{self.epochs}-s{self.seed}"
        return run_name(readable, self.identity())


def denoiser_store(root: str | Path | None = None) -> RunStore:
    """The denoisers' run store: ``<root>/denoisers``, ``root`` being the classifiers' (``runs/`` by default)."""
    return RunStore(Path(root or DEFAULT_ROOT) / DENOISER_FOLDER)


def newest_denoiser(store: RunStore, dataset: str, kind: str) -> Run | None:
    """The complete denoiser run of ``dataset`` and ``kind`` whose last session finished last, or None."""
    complete = store.select(kind=kind, dataset=dataset)
    return max(complete, key=lambda r: (r.record.get("sessions") or [{}])[-1].get("finished", ""), default=None)


def build_denoiser(config: DenoiserConfig) -> Denoiser:
    return Denoiser(CHANNELS, SPECS[config.dataset].num_classes, config.shape)


def load_denoiser(run: Run, device: torch.device | str = "cpu") -> Denoiser:
    """A finished denoiser run's EMA weights, in eval mode."""
    state = run.load_checkpoint("final", map_location=device)
    if state is None:
        raise FileNotFoundError(f"denoiser run {run.name} has no final weights; train it first")
    params = {k: v for k, v in run.params.items() if k != "model"}
    denoiser = build_denoiser(DenoiserConfig(**params))
    denoiser.load_state_dict(state["model"])
    return denoiser.to(device).eval()


def _step_draws(config: DenoiserConfig, images: Tensor, labels: Tensor, null_class: int, generator: torch.Generator):
    """One step's flipped images, noise levels, noise and labels (some dropped), from ``generator``."""
    batch = len(images)
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    log_sigma = torch.empty(batch).uniform_(math.log(config.sigma_min), math.log(config.sigma_max), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    dropped = torch.rand(batch, generator=generator) < config.label_drop
    return images, log_sigma.exp(), noise, torch.where(dropped, torch.full_like(labels, null_class), labels)


class _DenoiserSession:
    """The state a session trains and checkpoints: model, EMA, optimiser, position, epoch's loss."""

    def __init__(self, config: DenoiserConfig, run: Run, device: torch.device):
        self.config, self.run, self.device = config, run, device
        with torch.random.fork_rng(
            devices=[]
        ):  # the initial weights from the run's seed; the caller's stream untouched
            torch.manual_seed(config.seed)
            self.model = build_denoiser(config).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.epoch, self.step, self.updates, self.loss_sum, self.loss_count, self.seconds = 0, 0, 0, 0.0, 0, 0.0
        state = run.load_checkpoint("latest", map_location=device)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.epoch, self.step, self.updates = state["epoch"], state["step"], state["updates"]
            self.loss_sum, self.loss_count, self.seconds = state["loss_sum"], state["loss_count"], state["seconds"]

    def checkpoint(self) -> None:
        self.run.save_checkpoint(
            {
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "updates": self.updates,
                "loss_sum": self.loss_sum,
                "loss_count": self.loss_count,
                "seconds": self.seconds,
            }
        )

    def train_step(self, images: Tensor, labels: Tensor) -> None:
        started = time.monotonic()
        generator = torch.Generator().manual_seed(derived_seed(self.config.seed, self.epoch, self.step))
        images, sigma, noise, labels = _step_draws(self.config, images, labels, self.model.null_class, generator)
        to = self.device
        loss = denoising_loss(self.model, images.to(to), sigma.to(to), labels.to(to), noise.to(to))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # The average forgets its start quickly at first: with the full decay from step one, the random
        # initial weights would keep a share of decay^t, 17 % after 1,800 steps at 0.999.
        decay = min(self.config.ema_decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), self.model.parameters()):
                average.lerp_(current, 1 - decay)
        self.loss_sum, self.loss_count, self.step = self.loss_sum + loss.item(), self.loss_count + 1, self.step + 1
        self.updates += 1
        self.seconds += time.monotonic() - started

    def end_epoch(self) -> None:
        """The epoch's mean loss and training seconds (summed over sessions) into the history, then a
        checkpoint. An entry for this epoch left by a process killed before its checkpoint is replaced."""
        mean = self.loss_sum / max(self.loss_count, 1)
        earlier = [entry for entry in self.run.history if entry["epoch"] <= self.epoch]
        history = [*earlier, {"epoch": self.epoch + 1, "loss": mean, "seconds": round(self.seconds, 3)}]
        self.run.write_json("history.json", history)
        self.epoch, self.step, self.loss_sum, self.loss_count, self.seconds = self.epoch + 1, 0, 0.0, 0, 0.0
        self.checkpoint()


def _train_epochs(state: _DenoiserSession, data: ImageDataset, should_stop, bar, session: SessionRecord) -> bool:
    """Steps until the schedule ends (True) or ``should_stop()`` (False), checkpointing at every
    epoch's end and at least every :data:`CHECKPOINT_SECONDS`."""
    config = state.config
    steps = len(data.x_train) // config.batch_size  # the last, partial batch is dropped
    saved = time.monotonic()
    while state.epoch < config.epochs and not should_stop():
        generator = torch.Generator().manual_seed(derived_seed(config.seed, state.epoch))
        order = torch.randperm(len(data.x_train), generator=generator)
        while state.step < steps and not should_stop():
            rows = order[state.step * config.batch_size : (state.step + 1) * config.batch_size]
            state.train_step(as_float(data.x_train[rows]), data.y_train[rows])
            bar.update(1)
            if time.monotonic() - saved > CHECKPOINT_SECONDS:
                state.checkpoint()
                session.save("running")
                saved = time.monotonic()
        if state.step == steps:
            state.end_epoch()
            session.save("running")
            saved = time.monotonic()
    return state.epoch == config.epochs


def train_denoiser(
    config: DenoiserConfig,
    data: ImageDataset,
    store: RunStore,
    *,
    deadline: Deadline | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    kind: str = "real",
) -> tuple[Run, bool]:
    """Train (or continue) the denoiser of ``config`` on ``data``'s training set until it is done
    (True) or the deadline passes or a stop is asked (False, resumable). Returns the run."""
    config.validate()
    if data.name != config.dataset:
        raise ConfigError(f"the data is {data.name}, the denoiser's dataset {config.dataset}")
    if len(data.x_train) < config.batch_size:
        raise ConfigError(f"{len(data.x_train)} training images make no batch of {config.batch_size}")
    run = store.create(config.run_name(kind), config.identity())
    if run.trained:
        return run, True
    deadline, device = deadline or Deadline.after(None), torch.device(device)
    state = _DenoiserSession(config, run, device)
    session = SessionRecord.begin(run, {"kind": kind, "model": "denoiser", "data": data.source}, device)
    steps = len(data.x_train) // config.batch_size
    try:
        with (
            stop_requests() as stop,
            counter_bar(
                total=config.epochs * steps,
                initial=state.epoch * steps + state.step,
                enabled=progress,
                desc=run.name,
                unit="step",
            ) as bar,
        ):
            finished = _train_epochs(state, data, lambda: stop.is_set() or deadline.passed(), bar, session)
    except Exception as error:
        session.entry["ended"] = f"failed: {type(error).__name__}: {error}"
        session.save("interrupted")
        raise
    state.checkpoint()
    if finished:
        run.save_checkpoint({"model": state.ema.state_dict()}, "final")
        run.checkpoint_path("latest").unlink()
    run.log("training finished" if finished else f"stopped at epoch {state.epoch}, step {state.step}")
    session.save("trained" if finished else "interrupted")
    return run, finished


def measure_denoiser_run(
    run: Run, data: ImageDataset, *, images: int = 200, device: torch.device | str = "cpu"
) -> dict:
    """The quality of a trained denoiser run (:mod:`pagcore.evaluate.denoiser_quality`), stored as
    its ``metrics.json`` with where and when it was measured; the run is then complete."""
    metrics = measure_denoiser(load_denoiser(run, device), data, images=images, device=device)
    metrics.update(device=device_description(device), git=running_revision(), measured=utc_now())
    run.write_json("metrics.json", metrics)
    run.write_json("record.json", {**run.record, "status": "complete"})
    run.log(
        f"measured: implicit classifier {metrics['implicit_classifier']['accuracy']:.3f} on {metrics['test_images']}"
    )
    return metrics
