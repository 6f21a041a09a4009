"""``python -m pagcore selftest``: every code path on this machine's device, on a few batches.

Each path trains or evaluates a small subset for one epoch and reports facts (run, epochs, loss,
metrics); the first failure stops the test and names its path, with the traceback. The paths:
the vanilla model with the final evaluation and PAG pictures, each model-free target source,
each gradient strategy, a run stopped by its time budget and resumed, both adversarially trained
teachers, RIGD from each (precomputed and on the fly), PGD-100, AutoAttack, the checklist and
the PAG score with the tests' budgets, and STL-10's 96x96 model unless its data is None.

On CUDA the model is the paper's width (its memory, channels-last and bf16 paths); elsewhere it
is tiny, so the whole test takes a minute or two on two CPU cores. Runs are ``smoke`` runs in a
scratch store: they test code, and are never results.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pagcore.config import ExecutionConfig
from pagcore.data import ImageDataset, synthetic_dataset
from pagcore.evaluate.final import EvaluationConfig, load_pag_grid
from pagcore.evaluate.stored import BudgetConfig, evaluate_stored_run
from pagcore.orchestrate.experiments import RealDataExperiment
from pagcore.store.runs import Run, RunStore
from pagcore.train.devices import resolve_device
from pagcore.train.trainer import run_name_for

Check = Callable[[], dict[str, Any]]

# Synthetic (train, test) images per dataset when no data is given.
SYNTHETIC_IMAGES: dict[str, tuple[int, int]] = {"cifar10": (64, 16), "stl10": (16, 8)}


@dataclass(frozen=True)
class SelftestSize:
    """How big the self-test's models and subsets are: :meth:`for_device` chooses."""

    width: int
    batch_size: int
    stl10_batch_size: int
    train_images: int
    test_images: int
    evaluated_images: int

    @classmethod
    def for_device(cls, device: torch.device) -> SelftestSize:
        if device.type == "cuda":
            return cls(
                width=64, batch_size=64, stl10_batch_size=32, train_images=512, test_images=256, evaluated_images=64
            )
        return cls(width=4, batch_size=16, stl10_batch_size=8, train_images=48, test_images=8, evaluated_images=8)

    def knobs(self) -> dict[str, Any]:
        return {
            "scale": "paper",
            "width": self.width,
            "epochs": 1,
            "batch_size": self.batch_size,
            "train_subset": self.train_images,
            "test_subset": self.test_images,
        }


def autoattack_available() -> bool:
    return importlib.util.find_spec("pyautoattack") is not None


def synthetic_data() -> dict[str, ImageDataset]:
    return {name: synthetic_dataset(name, *sizes) for name, sizes in SYNTHETIC_IMAGES.items()}


class Selftest:
    """The paths of one self-test, sharing a scratch run store under ``work``."""

    def __init__(self, work: Path, data: dict[str, ImageDataset | None], device: str = "auto"):
        self.work, self.data, self.device = work, data, resolve_device(device)
        self.size = SelftestSize.for_device(self.device)
        self.quiet = {"device": str(self.device), "kind": "smoke", "progress": False}
        self.evaluation = EvaluationConfig(pgd_steps=2, picture_images=2)
        self.main = self.experiment("main")

    def experiment(self, store: str, dataset: str = "cifar10", **knobs: Any) -> RealDataExperiment:
        return RealDataExperiment(dataset, {**self.size.knobs(), **knobs}, RunStore(self.work / store), kind="smoke")

    def train(self, experiment: RealDataExperiment, row: str, *, evaluate: bool = False, **overrides: Any) -> dict:
        options = ExecutionConfig(evaluate=evaluate, **{**self.quiet, **overrides.pop("options", {})})
        result = experiment.train(row, self.data[experiment.dataset], options, self.evaluation, **overrides)
        run = result.run
        if not result.finished:
            raise RuntimeError(f"{run.name} stopped before the end of its epoch")
        facts = {"run": run.name, "status": run.status, "epochs": len(run.history)}
        facts["loss"] = run.history[-1]["loss"] if run.history else None
        if evaluate:
            if load_pag_grid(run.artifacts) is None:
                raise RuntimeError(f"{run.name}: no PAG picture was written")
            facts["metrics"] = {k: run.metrics[k] for k in ("clean", "linf", "l2")}
        return facts

    def stored(self, row: str) -> Run:
        return self.main.store.run(run_name_for(self.main.config(row), "smoke"))

    def strategy(self, name: str) -> Check:
        return lambda: self.train(self.experiment(f"strategy-{name}"), "class_mean", options={"strategy": name})

    def resumed(self) -> dict:
        """A budget of a few microseconds stops after the first step, checkpointed; the next session resumes."""
        experiment, data = self.experiment("resume"), self.data["cifar10"]
        first = experiment.train("vanilla", data, ExecutionConfig(evaluate=False, max_minutes=1e-7, **self.quiet))
        if first.finished:
            raise RuntimeError("the time budget did not stop the first session")
        second = experiment.train("vanilla", data, ExecutionConfig(evaluate=False, **self.quiet))
        sessions = second.run.record["sessions"]
        if not second.finished or len(sessions) != 2 or sessions[1]["epochs"][0] != 0:
            raise RuntimeError(f"resume went wrong: sessions {sessions}")
        return {"run": second.run.name, "sessions": len(sessions)}

    def stronger(self) -> dict:
        """The stored evaluations, with the tests' budgets, on the vanilla model."""
        vanilla, reference = self.stored("vanilla"), self.stored("adversarial_l2")
        names, note = ["pgd20", "pgd100", "pag_score"], None
        if autoattack_available():
            names += ["autoattack", "checks"]
        else:
            note = "AutoAttack and the checklist skipped: pyautoattack is not installed"
        lines = evaluate_stored_run(
            vanilla,
            vanilla.load_model(device=self.device),
            self.data["cifar10"].subset(None, self.size.test_images),
            names,
            subset=self.size.evaluated_images,
            device=self.device,
            source=(vanilla.name, vanilla.load_model(device=self.device)),
            reference=(reference.name, reference.load_model(device=self.device)),
            budgets=BudgetConfig.for_tests(),
        )
        skipped = [line for line in lines if "skipped" in line]
        if skipped:
            raise RuntimeError(f"evaluations skipped: {skipped}")
        return {"evaluations": sorted({line["name"] for line in lines}), "note": note}

    def stl10(self) -> dict:
        experiment = self.experiment("stl10", "stl10", batch_size=self.size.stl10_batch_size)
        return self.train(experiment, "class_mean", evaluate=True)

    def paths(self) -> list[tuple[str, Check]]:
        main = self.main
        paths: list[tuple[str, Check]] = [
            ("cifar10 vanilla, PGD evaluation and PAG pictures", lambda: self.train(main, "vanilla", evaluate=True)),
            ("cifar10 one image", lambda: self.train(main, "one_image")),
            ("cifar10 class mean", lambda: self.train(main, "class_mean")),
            ("cifar10 nearest neighbour", lambda: self.train(main, "nearest_neighbor")),
            *((f"gradient strategy {name}", self.strategy(name)) for name in ("loop", "vmap", "replicate")),
            ("a run stopped by its time budget resumes from its checkpoint", self.resumed),
            ("adversarial training ℓ∞ (RIGD teacher)", lambda: self.train(main, "adversarial_linf")),
            ("adversarial training ℓ2 (RIGD teacher)", lambda: self.train(main, "adversarial_l2")),
            ("RIGD ℓ∞, precomputed teacher gradients", lambda: self.train(main, "rigd_linf", evaluate=True)),
            ("RIGD ℓ2, teacher on the fly", lambda: self.train(main, "rigd_l2", rigd_targets="on_the_fly")),
            ("PGD-100, AutoAttack, checklist and PAG score (tests' budgets)", self.stronger),
        ]
        if self.data.get("stl10") is not None:
            paths.append(("stl10 class mean (96x96), evaluation and pictures", self.stl10))
        return paths

    def synchronize(self) -> None:
        """CUDA errors surface asynchronously; waiting here charges them to the path that caused them."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_selftest(work: Path, data: dict[str, ImageDataset | None] | None = None, device: str = "auto") -> dict:
    """Every path of :class:`Selftest`, in order, until the first failure; ``data`` defaults to
    synthetic images (``{"cifar10": ..., "stl10": ...}``; STL-10 may be None). The runs go to
    ``work/selftest``, emptied first (the test checks code, not stored runs); nothing else in
    ``work`` is touched."""
    scratch = work / "selftest"
    if scratch.exists():
        shutil.rmtree(scratch)
    test = Selftest(scratch, data or synthetic_data(), device)
    results: list[dict] = []
    report: dict[str, Any] = {
        "ok": True,
        "paths": results,
        "device": str(test.device),
        "size": test.size.__dict__,
        "note": "self-test runs check code paths on a few batches; their numbers are not results",
    }
    if test.data.get("stl10") is None:
        report["stl10"] = "no data given: its path is not checked"
    for name, check in test.paths():
        start = time.perf_counter()
        try:
            facts = check()
            test.synchronize()
        except Exception as error:  # noqa: BLE001 - every failure is reported with its path's name
            results.append(
                {
                    "path": name,
                    "ok": False,
                    "seconds": round(time.perf_counter() - start, 2),
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc().splitlines()[-40:],
                }
            )
            report.update(ok=False, failed=name)
            break
        results.append({"path": name, "ok": True, "seconds": round(time.perf_counter() - start, 2), **facts})
        print(f"selftest ok: {name} ({results[-1]['seconds']} s)", file=sys.stderr, flush=True)
    return report
