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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pagcore.base.validation import (
    check_choice,
    check_classes_per_image,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_seeds,
)
from pagcore.config import knob
from pagcore.paper.attacks import PGD, THREATS
from pagcore.paper.objective import GRADIENTS
from pagcore.paper.targets import MODEL_FREE_SOURCES

MODE_CENTERS: dict[int, tuple[float, ...]] = {0: (-50.0, -10.0, 30.0), 1: (-30.0, 10.0, 50.0)}


NUM_CLASSES = 2


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

    seeds: list[int] = knob([0], "seeds; each trains one vanilla and one PAG model")
    epochs: int = knob(100, "training epochs")
    batch_size: int = knob(128, "batch size")
    lr: float = knob(0.01, "Adam learning rate")
    lam: float = knob(1.0, "weight of the PAG term, lambda in Eq. (1)")
    source: str = knob("nearest_neighbor", "target-gradient source", choices=MODEL_FREE_SOURCES)
    gradient: str = knob("logit", "the score whose input-gradient is aligned", choices=GRADIENTS)
    pool_size: int = knob(100, "nearest-neighbour candidates per class")
    classes_per_image: int | None = knob(None, "k target classes sampled per point (default: all, the full sum)")
    train_per_mode: int = knob(1000, "training points per mode (the paper: 1,000)")
    test_per_mode: int = knob(100, "test points per mode (the paper: 600 in all)")
    threat: str = knob("l2", "PGD threat model", choices=THREATS)
    attack_eps: float = knob(15.0, "PGD radius")
    attack_steps: int = knob(10, "PGD steps")
    attack_step_size: float = knob(2.0, "PGD step size")
    attack_random_start: bool = knob(False, "start PGD at a random point of the ball")

    def validate(self) -> ToyConfig:
        """Raise a ConfigError naming the first bad parameter; return self when all are fine."""
        check_seeds("seeds", self.seeds)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_nonnegative("lam", self.lam)
        check_choice("source", self.source, MODEL_FREE_SOURCES)
        check_choice("gradient", self.gradient, GRADIENTS)
        check_positive_int("pool_size", self.pool_size)
        check_classes_per_image(self.classes_per_image, NUM_CLASSES)
        check_positive_int("train_per_mode", self.train_per_mode)
        check_positive_int("test_per_mode", self.test_per_mode)
        check_choice("threat", self.threat, THREATS)
        check_nonnegative("attack_eps", self.attack_eps)
        check_positive_int("attack_steps", self.attack_steps)
        check_positive("attack_step_size", self.attack_step_size)
        self.attack()  # validates the remaining PGD settings
        return self

    def attack(self) -> PGD:
        return PGD(
            self.threat,
            self.attack_eps,
            step_size=self.attack_step_size,
            steps=self.attack_steps,
            random_start=self.attack_random_start,
            bounds=None,  # the toy data is unbounded
            l2_start="ball",  # the images' 8/255-per-pixel start would be no start at this data's scale
        )


def seeded_model(seed: int) -> ToyMLP:
    """A ToyMLP whose initial weights depend only on ``seed`` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyMLP()


def toy_split(config: ToyConfig, seed: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The training and test sets of ``seed``: ``((x_train, y_train), (x_test, y_test))``."""
    generator = torch.Generator().manual_seed(seed)
    return make_toy_data(config.train_per_mode, generator), make_toy_data(config.test_per_mode, generator)
