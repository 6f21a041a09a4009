"""Extra evaluations of a stored run: PGD-20, PGD-100, AutoAttack, the gradient-masking checks, the PAG score.

Results go to ``<run>/evaluations/<key>.json``, beside the run's training metrics, one file per
evaluation *settings key*: a readable prefix plus a hash of everything that defines the
numbers (attack settings, radius, the test subset, the package version, reference models).
So:

* the run's identity (``params.json``), record and ``metrics.json`` are never touched;
* evaluating again with the same settings finds the file and computes nothing (idempotent);
  different settings, e.g. another subset, get another file, never overwrite one;
* each file is written atomically, so an interrupted evaluation leaves no half file.

The test subset is fixed and seeded: ``size`` images drawn without replacement from the
run's test set by a generator seeded with ``seed``, in increasing index order; its size,
seed and a SHA-256 of its indices are stored with the numbers.

Radii: the ``pgd20``/``pgd100`` entries use the paper's PGD radii (L-inf 0.031, see
:data:`pagcore.evaluation.PAPER_PGD_EPS`) so they compare with its tables; ``autoattack`` and
``checks`` use the standard 8/255 (:data:`pagcore.evaluation.STANDARD_EPS`). Every file says
which in ``settings["radius"]``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .attacks import PGD
from .autoattack import AutoAttackSettings, run_autoattack
from .checks import ChecklistSettings, gradient_masking_checklist, summary
from .data import ImageDataset
from .evaluation import PAPER_PGD_EPS, PICTURE_EPS, STANDARD_EPS, evaluate
from .pag_score import gradient_alignment, targeted_confidence
from .provenance import device_description, running_revision, utc_now, write_json_atomic
from .runs import Run, parameter_hash
from .validation import ConfigError, check_positive_int

EVALUATIONS = ("pgd20", "pgd100", "autoattack", "checks", "pag_score")
FOLDER = "evaluations"


@dataclass(frozen=True)
class EvaluationSubset:
    """A fixed, seeded subset of a test set (see the module docstring)."""

    indices: Tensor
    seed: int
    of: int

    @classmethod
    def draw(cls, total: int, size: int | None, seed: int = 0) -> EvaluationSubset:
        if size is None or size >= total:
            return cls(torch.arange(total), seed, total)
        check_positive_int("subset", size)
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        return cls(order[:size].sort().values, seed, total)

    def record(self) -> dict:
        digest = hashlib.sha256(",".join(map(str, self.indices.tolist())).encode()).hexdigest()
        return {"size": len(self.indices), "of": self.of, "seed": self.seed, "indices_sha256": digest}


@dataclass(frozen=True)
class Budgets:
    """How much work each evaluation does. The defaults are the real settings; :meth:`for_tests`
    shrinks them (and its results are labelled reduced), never for numbers in the book."""

    autoattack_iterations: int | None = None  # None: AutoAttack's standard 100
    square_queries: int | None = None  # None: AutoAttack's standard 5,000
    checklist: ChecklistSettings = ChecklistSettings()
    # Targeted pictures cost (C - 1) attacks of ``targeted_steps`` steps per image, so the
    # confidence score uses the first ``targeted_images`` images of the subset.
    targeted_images: int = 100
    targeted_steps: int = 60

    @classmethod
    def for_tests(cls) -> Budgets:
        return cls(
            autoattack_iterations=5,
            square_queries=50,
            checklist=ChecklistSettings(
                eps_multipliers=(0.0, 1.0, 32.0),
                curve_steps=3,
                baseline_steps=3,
                strong_steps=5,
                strong_restarts=2,
                square_queries=50,
            ),
            targeted_images=4,
            targeted_steps=3,
        )


def evaluation_key(name: str, settings: dict) -> str:
    return f"{name}-{settings.get('norm', 'all')}-{parameter_hash(settings)}"


def stored_evaluations(run: Run) -> dict[str, dict]:
    """Every stored evaluation of ``run``, by key."""
    folder = run.path / FOLDER
    if not folder.exists():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def chosen_evaluations(run: Run) -> dict[tuple[str, str], dict]:
    """One stored evaluation per (name, norm) for the book: real budgets before reduced ones, then
    the largest subset. ``norm`` is ``"all"`` for the PAG score."""
    chosen: dict[tuple[str, str], dict] = {}

    def rank(entry: dict) -> tuple:
        settings = entry["settings"]
        return (settings["budgets"] == "real", settings["subset"]["size"])

    for entry in stored_evaluations(run).values():
        slot = (entry["name"], entry["settings"].get("norm", "all"))
        if slot not in chosen or rank(entry) > rank(chosen[slot]):
            chosen[slot] = entry
    return chosen


@dataclass
class Job:
    name: str
    settings: dict
    compute: Callable[[], dict]

    @property
    def key(self) -> str:
        return evaluation_key(self.name, self.settings)


def evaluate_stored_run(
    run: Run,
    model: nn.Module,
    data: ImageDataset,
    evaluations: Sequence[str],
    *,
    subset: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    source: tuple[str, nn.Module] | None = None,
    reference: tuple[str, nn.Module] | None = None,
    budgets: Budgets = Budgets(),
    progress: bool = False,
) -> list[dict]:
    """Run the named ``evaluations`` that are not stored yet; returns one line per evaluation:
    ``{"name", "key", "path", "created"}``, or ``{"name", "skipped": reason}``.

    ``source`` (name, model) is the vanilla model for the transfer check; ``reference`` (name,
    model) the adversarially trained model the PAG score compares with."""
    unknown = [e for e in evaluations if e not in EVALUATIONS]
    if unknown:
        raise ConfigError(f"attacks must be among {', '.join(EVALUATIONS)}; got {', '.join(unknown)}")
    device = torch.device(device)
    chosen = EvaluationSubset.draw(len(data.x_test), subset, seed)
    x = data.x_test[chosen.indices].to(device).float() / 255
    y = data.y_test[chosen.indices].to(device)
    common = {
        "subset": chosen.record(),
        "seed": seed,
        "dataset": data.name,
        "budgets": "real" if budgets == Budgets() else "reduced (tests only)",
    }
    dataset = data.name

    jobs: list[Job] = []
    lines: list[dict] = []
    for norm in ("linf", "l2"):
        for name, steps, restarts, best in (("pgd20", 20, 1, False), ("pgd100", 100, 5, True)):
            if name in evaluations:
                eps = PAPER_PGD_EPS[dataset][norm]
                attack = PGD.paper_real_data(norm, eps, steps, restarts=restarts, keep_best=best)
                jobs.append(
                    Job(
                        name,
                        {**attack.settings(), "radius": "paper (Section 5.2)", **common},
                        _pgd_job(model, x, y, attack, seed, device, progress),
                    )
                )
        if "autoattack" in evaluations:
            aa = AutoAttackSettings(
                norm,
                STANDARD_EPS[dataset][norm],
                seed=seed,
                apgd_iterations=budgets.autoattack_iterations,
                fab_iterations=budgets.autoattack_iterations,
                square_queries=budgets.square_queries,
            )
            jobs.append(
                Job(
                    "autoattack",
                    {**aa.settings(), "radius": "standard (RobustBench)", **common},
                    lambda aa=aa: run_autoattack(model, x, y, aa, device=device),
                )
            )
        if "checks" in evaluations:
            eps = STANDARD_EPS[dataset][norm]
            settings = {
                **budgets.checklist.settings(),
                "norm": norm,
                "eps": eps,
                "radius": "standard (RobustBench)",
                "source": source[0] if source else None,
                **common,
            }
            jobs.append(Job("checks", settings, _checks_job(model, x, y, norm, eps, source, budgets.checklist, device)))
    if "pag_score" in evaluations:
        if reference is None:
            lines.append({"name": "pag_score", "skipped": "no adversarially trained reference run"})
        else:
            settings = {
                "score": "gradient alignment and targeted confidence",
                "reference": reference[0],
                "targeted_eps": PICTURE_EPS[dataset],
                "targeted_images": budgets.targeted_images,
                "targeted_steps": budgets.targeted_steps,
                **common,
            }
            jobs.append(
                Job(
                    "pag_score",
                    settings,
                    _pag_score_job(model, reference[1], x, y, data.num_classes, PICTURE_EPS[dataset], budgets),
                )
            )

    for job in jobs:
        path = run.path / FOLDER / f"{job.key}.json"
        if not path.exists():
            start = time.perf_counter()
            results = job.compute()
            write_json_atomic(
                path,
                {
                    "name": job.name,
                    "key": job.key,
                    "run": run.name,
                    "settings": job.settings,
                    "results": results,
                    "provenance": {
                        "git": running_revision(),
                        "torch": torch.__version__,
                        "device": device_description(device),
                        "finished": utc_now(),
                        "seconds": round(time.perf_counter() - start, 3),
                    },
                },
            )
            lines.append({"name": job.name, "key": job.key, "path": str(path), "created": True})
        else:
            lines.append({"name": job.name, "key": job.key, "path": str(path), "created": False})
    return lines


def _pgd_job(model, x, y, attack: PGD, seed: int, device, progress: bool):
    def compute() -> dict:
        accuracies = evaluate(model, x, y, {"robust": attack}, device=device, seed=seed, progress=progress)
        return {"clean": accuracies["clean"], "robust": accuracies["robust"], "images": len(x)}

    return compute


def _checks_job(model, x, y, norm, eps, source, settings: ChecklistSettings, device):
    def compute() -> dict:
        results = gradient_masking_checklist(
            model, x, y, norm=norm, eps=eps, source=source[1] if source else None, settings=settings, device=device
        )
        return {"checks": [asdict(r) for r in results], **summary(results)}

    return compute


def _pag_score_job(model, reference, x, y, num_classes: int, eps: float, budgets: Budgets):
    def compute() -> dict:
        few = slice(0, budgets.targeted_images)
        return {
            "gradient_alignment": gradient_alignment(model, reference, x, num_classes=num_classes),
            "targeted_confidence": targeted_confidence(
                model, reference, x[few], y[few], num_classes=num_classes, eps=eps, steps=budgets.targeted_steps
            ),
        }

    return compute
