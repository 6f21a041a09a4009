"""The stronger evaluations of a whole results table: which run gets how many test images, in
which order, within one time budget (``python -m pagcore evaluate --table``).

The evaluations themselves, stored in chunks beside each run, are :mod:`pagcore.evaluate.stored`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from pagcore.base.deadline import Deadline
from pagcore.base.validation import check_choices
from pagcore.config import TrainConfig
from pagcore.data import ImageDataset
from pagcore.evaluate.stored import BudgetConfig, companions, evaluate_stored_run
from pagcore.orchestrate.book_runs import results_rows, row_overrides
from pagcore.orchestrate.experiments import RealDataExperiment, run_name_for, shared_knobs
from pagcore.orchestrate.sweep import cli_arguments
from pagcore.paper.attacks import THREATS
from pagcore.store.runs import Run
from pagcore.train.trainer import prepare_data

# How many test images each run is evaluated on, per dataset: (the rows the book's argument rests
# on: vanilla, the best PAG row, both RIGD rows; every other run). Subsets drawn with one seed are
# nested (the first images of one permutation), so the smaller evaluations use images the larger
# ones also use. STL-10's are what about four hours of two cores afford at its measured cost
# (benchmarks/evaluation_cost.py: ~25 s per image for a robust model, all five evaluations).
SUBSETS: dict[str, tuple[int, int]] = {"cifar10": (1000, 500), "stl10": (100, 50)}
PAG_REPRESENTATIVE_ROWS = ("one_image", "class_mean", "nearest_neighbor")

BOOK_EVALUATIONS: dict[str, Any] = {"attacks": "pgd20,pgd100,autoattack", "checklist": True, "pag_score": True}
"""The stored evaluations the book reads of a trained run, as options of ``python -m pagcore evaluate``."""


def evaluate_command(
    dataset: str,
    row: str,
    overrides: Mapping[str, Any],
    scale: str,
    data: str,
    threats: Sequence[str] = THREATS,
    knobs: Mapping[str, Any] | None = None,
) -> str:
    """The shell command that adds :data:`BOOK_EVALUATIONS` to the real run of ``row`` with
    ``overrides`` and the shared ``knobs`` (the run :func:`pagcore.orchestrate.experiments.train_command`
    makes), on the dataset's standard seeded subset, with the attacks and the checklist in each of
    ``threats``."""
    threats = check_choices("threats", threats, THREATS)
    config = RealDataExperiment(dataset, shared_knobs(scale, knobs)).config(row, **overrides)
    run = run_name_for(config, "real")
    options = {"run": run, "data": data, "subset": SUBSETS[dataset][1], **BOOK_EVALUATIONS}
    options["threats"] = ",".join(threats) if threats != THREATS else None  # all of them: the default
    return "python -m pagcore " + shlex.join(cli_arguments("evaluate", options))


def evaluation_plan(
    table: dict[str, Run | None], every_run: Sequence[Run], dataset: str = "cifar10"
) -> list[tuple[Run, int]]:
    """(run, subset size) in the order to evaluate them: the large-subset rows of ``table`` (row
    -> its complete run, or None) first, then its other rows in table order, then the rest of
    ``every_run`` (seeds, the lambda grid, the k study, ...) by name. The best PAG row is the
    representative-based one with the highest PGD-20 L-inf accuracy on the full test set."""
    large_subset, standard_subset = SUBSETS[dataset]
    trained = [row for row in PAG_REPRESENTATIVE_ROWS if table.get(row) is not None]
    best = max(trained, key=lambda row: table[row].metrics["linf"], default=None)
    large = [table[row] for row in ("vanilla", best, "rigd_linf", "rigd_l2") if row and table.get(row) is not None]
    rows = [run for run in table.values() if run is not None and run not in large]
    named = {run.name for run in large + rows}
    rest = sorted((run for run in every_run if run.name not in named), key=lambda run: run.name)
    return [(run, large_subset) for run in large] + [(run, standard_subset) for run in rows + rest]


def evaluate_table(
    store,
    dataset: str,
    knobs: dict,
    kind: str,
    images: Callable[[], ImageDataset],
    evaluations: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    budgets: BudgetConfig = BudgetConfig(),
    deadline: Deadline | None = None,
    progress: bool = False,
    source_name: str | None = None,
    reference_name: str | None = None,
    denoiser: tuple[str, torch.nn.Module, float] | None = None,
    threats: Sequence[str] = THREATS,
) -> dict:
    """``evaluations`` (the attacks and checklists in each of ``threats``) of every complete run of
    ``dataset`` at ``knobs["scale"]`` in ``store``, in :func:`evaluation_plan`'s order, before
    ``deadline``. ``images()`` loads the dataset, only after every run has been found.
    Returns ``{"runs": [...], "rows_without_a_run": [...]}``."""
    threats = check_choices("threats", threats, THREATS)
    experiment = RealDataExperiment(dataset, knobs, store, kind=kind)
    table = {row: experiment.run(row, **row_overrides(dataset, row)) for row in results_rows(dataset)}
    plan = evaluation_plan(table, store.select(kind=kind, dataset=dataset, scale=knobs["scale"]), dataset)
    data = images() if plan else None
    deadline = deadline or Deadline.after(None)
    done = []
    for run, subset in plan:
        if deadline.passed():
            done.append({"run": run.name, "subset": subset, "skipped": "out of time"})
            continue
        if not run.trained:
            # A run whose weights are not kept (the gradient-kind comparison's short runs) is not evaluated.
            done.append({"run": run.name, "subset": subset, "skipped": "its final weights are not in this store"})
            continue
        source, reference = companions(store, run, evaluations, source_name, reference_name, device)
        lines = evaluate_stored_run(
            run,
            run.load_model(device=device),
            prepare_data(TrainConfig.from_identity(run.params), data),
            evaluations,
            subset=subset,
            device=device,
            source=source,
            reference=reference,
            denoiser=denoiser,
            budgets=budgets,
            threats=threats,
            progress=progress,
            deadline=deadline,
        )
        done.append({"run": run.name, "subset": subset, "evaluations": lines})
    return {"runs": done, "rows_without_a_run": [row for row, run in table.items() if run is None]}


SMOOTHED_DRAWS = 8
"""m, the noise draws per forward pass of a soft smoothed classifier in the book's evaluations: each
PGD step and each gradient of the PAG score costs m passes of the base classifier."""

SMOOTHING_IMAGES: dict[str, int] = {"certify": 100, "smoothed": 100}
"""The seeded CIFAR-10 test subsets of the randomized-smoothing chapter: CERTIFY's (n + n0 passes of the
base classifier per image), and that of the attacks, scores and pictures of the smoothed classifier."""


def evaluate_smoothing(
    run: Run,
    data: ImageDataset,
    reference: tuple[str, torch.nn.Module] | None,
    *,
    device: torch.device | str = "cpu",
    budgets: BudgetConfig = BudgetConfig(),
    deadline: Deadline | None = None,
    progress: bool = False,
) -> list[dict]:
    """Everything the randomized-smoothing chapter shows of a noise-trained ``run``: its base
    classifier's PAG score against ``reference``, its smoothed classifier's certificate, and the
    PGD accuracy, PAG score and pictures of its soft smoothed classifier (``SMOOTHED_DRAWS`` draws).
    Stored evaluations are not computed again."""
    model = run.load_model(device=device)
    data = prepare_data(TrainConfig.from_identity(run.params), data)
    shared = dict(device=device, reference=reference, budgets=budgets, deadline=deadline, progress=progress)
    base = evaluate_stored_run(run, model, data, ["pag_score", "certify"], subset=SMOOTHING_IMAGES["certify"], **shared)
    return base + evaluate_stored_run(
        run,
        model,
        data,
        ["pgd20", "pag_score", "pictures"],
        subset=SMOOTHING_IMAGES["smoothed"],
        smoothed_draws=SMOOTHED_DRAWS,
        **shared,
    )
