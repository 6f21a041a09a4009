"""The 2-D toy experiment of Section 5.1 and Appendix C.1.

Two classes live on the line x2 = 2 x1. Each class has three Gaussian modes along it
(x1 ~ N(c, 1)), with centres {-50, -10, 30} for class 0 and {-30, 10, 50} for class 1, so
the classes alternate every 20 units of x1. A 2 -> 32 -> 2 ReLU network is trained twice
per seed, with the same data, initialisation and batch order: once with cross-entropy alone
("vanilla") and once with Eq. (1) (nearest-neighbour targets by default). Both are then
attacked with an L2 PGD of 10 steps of size 2 inside a ball of radius 15, which is too small
to carry a sample to the other class along the line: all the damage an attack does comes
from leaving the data manifold.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from . import paper
from .attacks import NORMS, PGD, accuracy
from .objective import GRADIENT_KINDS, pag_loss, sample_target_classes
from .progress import progress_bar
from .provenance import run_record, utc_now
from .targets import MODEL_FREE_SOURCES, build_target_source
from .validation import (
    check_choice,
    check_classes_per_image,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_seeds,
)

MODE_CENTERS: dict[int, tuple[float, ...]] = {0: (-50.0, -10.0, 30.0), 1: (-30.0, 10.0, 50.0)}
NUM_CLASSES = 2

# The paper's figures for this experiment (Section 5.1).
PAPER_RESULTS = paper.TOY


def make_toy_data(samples_per_mode: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Points ``(N, 2)`` float32 on the line x2 = 2 x1 and labels ``(N,)`` int64 (Appendix C.1)."""
    xs, ys = [], []
    for label, centers in MODE_CENTERS.items():
        for center in centers:
            x1 = center + torch.randn(samples_per_mode, generator=generator)
            xs.append(torch.stack([x1, 2.0 * x1], dim=1))
            ys.append(torch.full((samples_per_mode,), label, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


class ToyMLP(nn.Sequential):
    """The 2 -> 32 -> 2 fully connected ReLU classifier of Appendix C.1."""

    def __init__(self, hidden: int = 32):
        super().__init__(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES))


@dataclass
class ToyConfig:
    """Every knob of the toy experiment; the defaults are the paper's setting (Appendix C.1).

    The paper does not state lambda or the nearest-neighbour pool size for this experiment;
    ``lam=1`` and ``pool_size=100`` are our choices, fixed before any result was seen.
    """

    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    lam: float = 1.0
    source: str = "nearest_neighbor"
    gradient: str = "logit"
    pool_size: int = 100
    classes_per_image: int | None = None  # k < C samples the class sum of Eq. (1) (unbiased)
    train_per_mode: int = 1000
    test_per_mode: int = 100
    attack_norm: str = "l2"
    attack_eps: float = 15.0
    attack_steps: int = 10
    attack_step_size: float = 2.0
    attack_random_start: bool = False

    def validate(self) -> "ToyConfig":
        """Raise a ConfigError naming the first bad parameter; return self when all are fine."""
        check_seeds("seeds", self.seeds)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_nonnegative("lam", self.lam)
        check_choice("source", self.source, MODEL_FREE_SOURCES)
        check_choice("gradient", self.gradient, GRADIENT_KINDS)
        check_positive_int("pool_size", self.pool_size)
        check_classes_per_image(self.classes_per_image, NUM_CLASSES)
        check_positive_int("train_per_mode", self.train_per_mode)
        check_positive_int("test_per_mode", self.test_per_mode)
        check_choice("attack_norm", self.attack_norm, NORMS)
        check_nonnegative("attack_eps", self.attack_eps)
        check_positive_int("attack_steps", self.attack_steps)
        check_positive("attack_step_size", self.attack_step_size)
        self.attack()  # validates the remaining PGD settings
        return self

    def attack(self) -> PGD:
        return PGD(
            self.attack_norm,
            self.attack_eps,
            step_size=self.attack_step_size,
            steps=self.attack_steps,
            random_start=self.attack_random_start,
            bounds=None,  # the toy data is unbounded
        )


@dataclass
class ToySeedResult:
    seed: int
    metrics: dict[str, dict[str, float]]  # {"vanilla": {"clean", "pgd"}, "pag": {...}}
    models: dict[str, ToyMLP]
    test: tuple[Tensor, Tensor]


def seeded_model(seed: int) -> ToyMLP:
    """A ToyMLP whose initial weights depend only on ``seed`` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyMLP()


def train_toy_model(
    x: Tensor,
    y: Tensor,
    config: ToyConfig,
    seed: int,
    *,
    lam: float,
    progress: bool = True,
    description: str = "",
) -> ToyMLP:
    """Adam on Eq. (1) for ``config.epochs`` epochs; ``lam=0`` is the vanilla model.

    The initial weights and the batch order depend only on ``seed``, so the vanilla and the
    PAG model of one seed differ by the loss alone.
    """
    model = seeded_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    source = None
    if lam > 0:
        source = build_target_source(config.source, x, y, NUM_CLASSES, seed=seed, pool_size=config.pool_size, center=0.0)
    order_generator = torch.Generator().manual_seed(seed)
    class_generator = torch.Generator().manual_seed(seed + 1)
    index_all = torch.arange(len(x))
    model.train()
    for _ in progress_bar(range(config.epochs), enabled=progress, desc=description, unit="epoch"):
        order = torch.randperm(len(x), generator=order_generator)
        for start in range(0, len(x), config.batch_size):
            index = index_all[order[start : start + config.batch_size]]
            xb, yb = x[index], y[index]
            classes = sample_target_classes(len(index), NUM_CLASSES, config.classes_per_image, generator=class_generator)
            targets = source.target_gradients(xb, index, classes) if source is not None else None
            loss = pag_loss(model, xb, yb, classes, targets, lam, num_classes=NUM_CLASSES, kind=config.gradient, strategy="loop")
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            optimizer.step()
    model.eval()
    return model


def evaluate_toy_model(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, x_adv: Tensor | None = None) -> dict[str, float]:
    """Clean accuracy and accuracy under ``attack``, as fractions (``x_adv``: already attacked points)."""
    if x_adv is None:
        x_adv = attack(model, x, y)
    return {"clean": accuracy(model, x, y), "pgd": accuracy(model, x_adv, y)}


def toy_split(config: ToyConfig, seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The training and test sets of ``seed``: ``((x_train, y_train), (x_test, y_test))``."""
    generator = torch.Generator().manual_seed(seed)
    return make_toy_data(config.train_per_mode, generator), make_toy_data(config.test_per_mode, generator)


def run_toy_seed(config: ToyConfig, seed: int, *, include_vanilla: bool = True, progress: bool = True) -> ToySeedResult:
    (x_train, y_train), (x_test, y_test) = toy_split(config, seed)
    attack = config.attack()
    runs = {"pag": config.lam}
    if include_vanilla:
        runs = {"vanilla": 0.0, **runs}
    models, metrics = {}, {}
    for name, lam in runs.items():
        model = train_toy_model(x_train, y_train, config, seed, lam=lam, progress=progress, description=f"seed {seed} {name}")
        models[name] = model
        metrics[name] = evaluate_toy_model(model, x_test, y_test, attack)
    return ToySeedResult(seed=seed, metrics=metrics, models=models, test=(x_test, y_test))


@dataclass
class ToyExperiment:
    config: ToyConfig
    per_seed: list[ToySeedResult]
    seconds: float
    started: str

    def mean(self, model: str, metric: str) -> float:
        return statistics.fmean(r.metrics[model][metric] for r in self.per_seed)

    def std(self, model: str, metric: str) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        values = [r.metrics[model][metric] for r in self.per_seed]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def summary(self) -> dict:
        """Means over seeds as fractions, in the CLI's JSON shape."""
        models = self.per_seed[0].metrics.keys()
        out: dict = {m: {k: self.mean(m, k) for k in ("clean", "pgd")} for m in models}
        out["seeds"] = list(self.config.seeds)
        out["seconds"] = round(self.seconds, 2)
        return out

    def table(self) -> list[dict]:
        """One row per model: mean and std over seeds of clean and PGD accuracy."""
        rows = []
        for m in self.per_seed[0].metrics:
            row = {"model": m}
            for k in ("clean", "pgd"):
                row[f"{k}_mean"], row[f"{k}_std"] = self.mean(m, k), self.std(m, k)
            rows.append(row)
        return rows

    def config_dict(self) -> dict:
        return asdict(self.config)


def run_toy_experiment(config: ToyConfig, *, include_vanilla: bool = True, progress: bool = True) -> ToyExperiment:
    """Train and attack the vanilla and PAG models for every seed of ``config``."""
    config.validate()
    started, start = utc_now(), time.perf_counter()
    per_seed = [run_toy_seed(config, s, include_vanilla=include_vanilla, progress=progress) for s in config.seeds]
    return ToyExperiment(config=config, per_seed=per_seed, seconds=time.perf_counter() - start, started=started)


def toy_record(experiment: ToyExperiment) -> dict:
    """Results per seed, their summary and the provenance record, ready to be saved as JSON."""
    record = run_record(experiment.config_dict(), wall_seconds=experiment.seconds, started=experiment.started, device="cpu")
    record["summary"] = experiment.summary()
    record["per_seed"] = {str(r.seed): r.metrics for r in experiment.per_seed}
    record["paper"] = PAPER_RESULTS
    return record


def lambda_sweep(config: ToyConfig, lams: list[float], sources: list[str], seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """PAG models of one seed over a grid of lambdas and sources: ``{source: {"clean": [...], "pgd": [...]}}``.

    lambda = 0 is the vanilla model, the same for every source, so it is trained once.
    """
    config.validate()
    (x_train, y_train), (x_test, y_test) = toy_split(config, seed)
    attack = config.attack()
    cache: dict[tuple[str, float], dict[str, float]] = {}
    sweep: dict[str, dict[str, list[float]]] = {}
    for source in sources:
        check_choice("source", source, MODEL_FREE_SOURCES)
        sweep[source] = {"clean": [], "pgd": []}
        for lam in lams:
            key = ("vanilla", 0.0) if lam == 0 else (source, lam)
            if key not in cache:
                model = train_toy_model(x_train, y_train, replace(config, source=source), seed, lam=lam, progress=False)
                cache[key] = evaluate_toy_model(model, x_test, y_test, attack)
            for metric in ("clean", "pgd"):
                sweep[source][metric].append(cache[key][metric])
    return sweep
