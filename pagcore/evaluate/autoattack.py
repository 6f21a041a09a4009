"""AutoAttack (Croce & Hein, ICML 2020) through its authors' code, as packaged on PyPI.

The ``pyautoattack`` package is the original implementation (fra31/auto-attack) put on PyPI
by its authors; re-implementations such as torchattacks' are known to give different numbers,
so the book uses this one, pinned in ``constraints.txt``. Its standard version runs APGD-CE,
APGD-T (9 target classes), FAB-T (9 target classes) and Square (5,000 queries) one after
the other, each on the images the previous ones did not break, and an image counts as robust
only if it survives all four. The radius is L-inf 8/255 or L2 0.5 (1.5 on STL-10):
:data:`pagcore.evaluate.final.STANDARD_EPS`, the RobustBench convention.

:func:`run_autoattack` returns the robust accuracy, the accuracy left after each attack, the
package's own warnings (it flags, for example, points with zero gradient or a Square attack
that succeeds where the gradient attacks failed) and :meth:`AutoAttackConfig.settings`,
which records everything that defines the numbers, the package version included.

Reduced settings (fewer iterations and queries) exist for tests only; they are part of the
settings, so a reduced result can never be mistaken for the standard one.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version

import torch
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.validation import check_choice, check_positive, check_positive_int
from pagcore.data import as_float
from pagcore.paper.attacks import THREATS

STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
PACKAGE = "pyautoattack"
_PACKAGE_NORM = {"linf": "Linf", "l2": "L2"}
# The package reports its progress only through its logger; these are the lines that carry numbers.
_AFTER_ATTACK = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%")


@dataclass(frozen=True)
class AutoAttackConfig:
    """One AutoAttack evaluation. ``attacks`` defaults to the standard four; a subset of them
    (e.g. only ``square``) runs with the standard version's parameters for those attacks.
    ``apgd_iterations``, ``fab_iterations`` and ``square_queries`` reduce the attacks for tests."""

    norm: str
    eps: float
    seed: int = 0
    attacks: tuple[str, ...] = STANDARD_ATTACKS
    apgd_iterations: int | None = None
    fab_iterations: int | None = None
    square_queries: int | None = None

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, THREATS)
        check_positive("eps", self.eps)
        for attack in self.attacks:
            check_choice("attacks", attack, STANDARD_ATTACKS)
        for name in ("apgd_iterations", "fab_iterations", "square_queries"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))

    @property
    def reduced(self) -> bool:
        return any(v is not None for v in (self.apgd_iterations, self.fab_iterations, self.square_queries))

    @property
    def version(self) -> str:
        if self.reduced:
            return "reduced (tests only)"
        return "standard" if tuple(self.attacks) == STANDARD_ATTACKS else "standard, attacks " + "+".join(self.attacks)

    def settings(self) -> dict:
        return {
            "attack": "autoattack",
            "version": self.version,
            "attacks": list(self.attacks),
            "norm": self.norm,
            "eps": self.eps,
            "seed": self.seed,
            "package": PACKAGE,
            "package_version": package_version(PACKAGE),
            "apgd_iterations": self.apgd_iterations or 100,
            "fab_iterations": self.fab_iterations or 100,
            "square_queries": self.square_queries or 5000,
            "precision": "float32",
        }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _adversary(model: nn.Module, settings: AutoAttackConfig, num_classes: int, device: torch.device):
    """The package's standard AutoAttack, with only the list of attacks and, in tests, the budgets
    changed. Fewer than 10 classes only happen in tests."""
    from pyautoattack import AutoAttack  # imported here: only evaluation needs the package

    adversary = AutoAttack(
        model,
        norm=_PACKAGE_NORM[settings.norm],
        eps=settings.eps,
        version="standard",
        seed=settings.seed,
        device=device,
    )
    adversary.attacks_to_run = list(settings.attacks)
    adversary.apgd_targeted.n_target_classes = min(9, num_classes - 1)
    adversary.fab.n_target_classes = min(9, num_classes - 1)
    if settings.apgd_iterations:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = settings.apgd_iterations
    if settings.fab_iterations:
        adversary.fab.n_iter = settings.fab_iterations
    if settings.square_queries:
        adversary.square.n_queries = settings.square_queries
    return adversary


@contextmanager
def _package_log():
    """The package's log records while the block runs (it reports only through its logger)."""
    collect, logger = _Collect(), logging.getLogger("auto-attack")
    previous_level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    try:
        yield collect.records
    finally:
        logger.removeHandler(collect)
        logger.setLevel(previous_level)


def _predictions(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def run_autoattack(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    settings: AutoAttackConfig,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 250,
) -> dict:
    """AutoAttack on ``images`` (floats in [0, 1], or uint8) with ``labels``; see the module docstring.

    Returns ``clean`` and ``robust`` accuracy, ``after_attack`` (accuracy left after each
    attack, as the package logs it, to 0.01 %), ``robust_mask`` (per image, as a list),
    ``max_perturbation`` (checked against eps), ``flags`` (the package's warnings),
    ``seconds`` and ``settings``.
    """
    device = torch.device(device)
    x = as_float(images).to(device)
    y = labels.to(device)
    start = time.perf_counter()
    # The package seeds torch's global generators; fork them so the caller's stream is untouched.
    devices = [device] if device.type == "cuda" else []
    with _package_log() as records, eval_mode(model), torch.autocast(device.type, enabled=False):
        with torch.random.fork_rng(devices=devices):
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            x_adv, _ = _adversary(model, settings, num_classes, device).run_standard_evaluation(
                x, y, batch_size=batch_size
            )
            clean = _predictions(model, x, batch_size) == y
            survived = _predictions(model, x_adv, batch_size) == y
    # Robust means: classified correctly before and after (an image wrong to begin with is
    # returned unchanged, so ``survived`` alone would count it only if it were right).
    robust = clean & survived
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if settings.norm == "linf" else delta.norm(dim=1)
    logged = (_AFTER_ATTACK.search(record.getMessage()) for record in records)
    after_attack = {match.group(1).lower(): float(match.group(2)) / 100 for match in logged if match}
    return {
        "clean": clean.float().mean().item(),
        "robust": robust.float().mean().item(),
        "after_attack": after_attack,
        "robust_mask": robust.cpu().tolist(),
        "max_perturbation": size.max().item() if len(size) else 0.0,
        "flags": [r.getMessage() for r in records if r.levelno >= logging.WARNING],
        "images": len(x),
        "seconds": round(time.perf_counter() - start, 3),
        "settings": settings.settings(),
    }
