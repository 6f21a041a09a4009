"""Command line: the book's experiments without Jupyter.

    python -m pagcore toy --seeds 0 1 2 3 4
    python -m pagcore train --scale cpu --dataset cifar10 --data .data/cifar10.npz --objective pag --source class_mean
    python -m pagcore table --scale cpu --dataset cifar10 --data .data/cifar10.npz --max-minutes 170
    python -m pagcore evaluate --run <run name or directory> --data .data/cifar10.npz
    python -m pagcore evaluate --run <run> --data .data/cifar10.npz \
        --attacks pgd20,pgd100,autoattack --checklist --pag-score --subset 1000
    python -m pagcore evaluate --table cifar10 --scale cpu --data .data/cifar10.npz \
        --attacks pgd100,autoattack --checklist --pag-score --max-minutes 150
    python -m pagcore sweep train -p source one_image class_mean -p seed 0 1 ...   (see pagcore/orchestrate/sweep.py)
    python -m pagcore selftest                      (every code path on this device, in a minute or two)
    python -m pagcore denoiser --data .data/cifar10.npz --max-minutes 60   (the score model, resumable)
    python -m pagcore posterior-gap --data .data/cifar10.npz   (can each source's targets be log-posterior gradients?)
    python -m pagcore weights restore --all          (final weights of committed runs, from git history)

Progress goes to stderr; the last line of stdout is one JSON object with the results, so
scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pagcore.base.deadline import Deadline
from pagcore.base.validation import (
    ConfigError,
    check_choices,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from pagcore.config import (
    KINDS,
    ExecutionConfig,
    ObjectiveConfig,
    TrainConfig,
    add_arguments,
    add_group_arguments,
    from_arguments,
    given,
    given_knobs,
)
from pagcore.data import SPECS
from pagcore.evaluate.ceiling import measure_ceiling
from pagcore.evaluate.final import EvaluationConfig, evaluate_run
from pagcore.evaluate.stored import ATTACKS, BudgetConfig, companions, evaluate_stored_run
from pagcore.orchestrate.book_runs import TABLE_ROWS, BookRun
from pagcore.orchestrate.evaluations import SUBSETS, evaluate_table
from pagcore.orchestrate.experiments import ROWS, load_data
from pagcore.orchestrate.measurements import measure_posterior_gap
from pagcore.orchestrate.queue import RunQueue
from pagcore.orchestrate.selftest import run_selftest, synthetic_data
from pagcore.orchestrate.sweep import add_sweep_parser
from pagcore.orchestrate.workers import DataSource
from pagcore.paper.attacks import THREATS
from pagcore.paper.denoiser import Denoiser
from pagcore.store import weights
from pagcore.store.provenance import write_json_atomic
from pagcore.store.runs import RunStore
from pagcore.toy.experiment import run_toy_experiment, toy_record
from pagcore.toy.problem import ToyConfig
from pagcore.train.denoiser import (
    DenoiserConfig,
    denoiser_store,
    load_denoiser,
    measure_denoiser_run,
    newest_denoiser,
    train_denoiser,
)
from pagcore.train.devices import resolve_device
from pagcore.train.trainer import kind_of, prepare_data, train


def _add_toy_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "toy",
        help="the 2-D toy experiment (Section 5.1)",
        description="Train vanilla and PAG toy models per seed and attack them with PGD.",
    )
    add_group_arguments(p, "toy experiment", ToyConfig)
    p.add_argument("--record", help="also write the full result and its provenance record to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_run_toy)


def _run_toy(args: argparse.Namespace) -> dict:
    config = ToyConfig(**given(args, ToyConfig)).validate()
    experiment = run_toy_experiment(config, progress=not args.no_progress)
    if args.record:
        write_json_atomic(args.record, toy_record(experiment))
    return experiment.summary()


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default="", help="torchvision root directory or .npz file (x_train, y_train, x_test, y_test)"
    )
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data")
    p.add_argument(
        "--synthetic",
        type=int,
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="use random images of the dataset's shape instead of --data (smoke tests only)",
    )
    p.add_argument("--runs", default=None, help="run-store directory (default: runs/ in the repository)")


def _add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train (or resume) one run on CIFAR-10 or STL-10 (Section 5.2)",
        description="Options left out take the scale's preset, then the paper's values.",
    )
    add_arguments(p)
    add_group_arguments(p, "execution", ExecutionConfig)
    add_group_arguments(p, "evaluation", EvaluationConfig)
    _add_data_arguments(p)
    p.set_defaults(handler=_run_train)


def _dataset(args: argparse.Namespace, name: str):
    return load_data(name, args.data, download=args.download, synthetic=args.synthetic)


def _run_train(args: argparse.Namespace) -> dict:

    # Every parameter is checked before any data is read.
    config = from_arguments(args).resolve()
    options = ExecutionConfig(**given(args, ExecutionConfig)).validate()
    evaluation = EvaluationConfig(**given(args, EvaluationConfig)).validate()
    data = _dataset(args, config.data.dataset)
    result = train(config, data, RunStore(args.runs), options, evaluation)
    run = result.run
    return {
        "run": run.name,
        "path": str(run.path),
        "status": run.status,
        "finished": result.finished,
        "epochs_done": len(run.history),
        "metrics": run.metrics,
    }


def _add_table_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "table",
        help="train (or resume) the missing runs of a results table, teachers before their students",
        description=(
            "The rows of Table 1 (CIFAR-10) or Table 2 (STL-10), in order: complete runs are skipped, an"
            " interrupted one resumes. With --max-minutes it stops cleanly when the time is up; run it"
            " again to go on. Shared options (scale, epochs, seed, ...) apply to every row. With --workers N,"
            " N runs train side by side, each in a process of its own."
        ),
    )
    p.add_argument(
        "--rows",
        nargs="+",
        default=list(TABLE_ROWS),
        choices=list(ROWS),
        metavar="ROW",
        help=f"the rows to train, in this order (default: all, teachers first: {' '.join(TABLE_ROWS)})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs trained side by side, each in a process of its own with its share of the CPU cores, a RIGD"
        " row once its teacher is complete (default 1: one after another, in this process)",
    )
    add_arguments(p)
    add_group_arguments(p, "execution", ExecutionConfig)
    add_group_arguments(p, "evaluation", EvaluationConfig)
    _add_data_arguments(p)
    p.set_defaults(handler=_run_table)


def _run_table(args: argparse.Namespace) -> dict:
    knobs = given_knobs(args)
    row_knobs = sorted({k for row in ROWS.values() for k in row.knobs} | {"teacher"})
    if set(knobs) & set(row_knobs):
        raise ConfigError(f"{', '.join(sorted(set(knobs) & set(row_knobs)))}: each row sets its own (see --rows)")
    dataset = knobs.pop("dataset", "cifar10")
    options = ExecutionConfig(**given(args, ExecutionConfig)).validate()
    evaluation = EvaluationConfig(**given(args, EvaluationConfig)).validate()
    subset = bool(knobs.get("train_subset") or knobs.get("test_subset"))
    kind = options.kind or kind_of(synthetic=args.synthetic, subset=subset)
    scale = knobs.pop("scale", "paper")
    queue = RunQueue(
        [BookRun("table", dataset, row, scale=scale) for row in args.rows], RunStore(args.runs), kind=kind, knobs=knobs
    )
    check_positive_int("workers", args.workers)
    queue.check()  # every row resolves, and may be trained, before any data is read
    deadline = Deadline.after(options.max_minutes)
    side_by_side = {}
    if args.workers == 1:
        data = _dataset(args, dataset)
        outcomes = queue.make(lambda _: data, deadline, options, evaluation)
    else:
        side_by_side = _run_table_side_by_side(args, queue, dataset, deadline, options, evaluation)
        outcomes = side_by_side.pop("runs")
    rows = {}
    for row, entry in zip(args.rows, queue.entries):
        run = queue.store.run(queue.run_name(entry))
        if run.params:
            rows[row] = {"run": run.name, "finished": run.complete, "metrics": run.metrics}
    complete = all(queue.status(entry).state == "complete" for entry in queue.entries)
    result = {"dataset": dataset, "kind": kind, "rows": rows, "complete": complete, "outcomes": outcomes}
    return {**result, "side_by_side": side_by_side} if side_by_side else result


def _run_table_side_by_side(
    args: argparse.Namespace,
    queue: RunQueue,
    dataset: str,
    deadline: Deadline,
    options: ExecutionConfig,
    evaluation: EvaluationConfig,
) -> dict:
    """:meth:`RunQueue.make_side_by_side` with ``args.workers`` workers, their files in a scratch folder."""
    _dataset(args, dataset)  # read here once: a wrong --data fails before any worker starts, a --download happens once
    source = DataSource(args.data, tuple(args.synthetic) if args.synthetic else None)
    with tempfile.TemporaryDirectory(prefix="pagcore-table-") as folder:
        return queue.make_side_by_side(
            {dataset: source}, deadline, options, evaluation, workers=args.workers, folder=folder
        )


def _add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a stored run again, or add attacks and checks to it",
        description="Without --attacks, --checklist, --pag-score or --certify: the final evaluation again (clean and"
        " PGD accuracy, PAG pictures). With any of them: extra evaluations stored in the run's evaluations/ folder.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run name or directory")
    which.add_argument(
        "--table",
        metavar="DATASET",
        choices=("cifar10", "stl10"),
        help="with --attacks, --checklist or --pag-score: every complete run of this dataset at --scale, on a"
        " larger seeded subset of the test set for vanilla, the best PAG row and both RIGD rows and a smaller one"
        " for the others ("
        + "; ".join(f"{name} {large:,} and {small:,} images" for name, (large, small) in SUBSETS.items())
        + "), those four first (--subset is then not allowed)",
    )
    p.add_argument("--scale", default=None, help="the table's scale, with --table (cpu or paper)")
    p.add_argument(
        "--kind", default="real", choices=KINDS, help="with --table: the kind of runs (smoke only in code tests)"
    )
    add_group_arguments(p, "final evaluation (without stored evaluations)", EvaluationConfig)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--attacks",
        default=None,
        help=f"comma-separated, any of {','.join(ATTACKS)}: stored per settings key, computed once",
    )
    p.add_argument("--checklist", action="store_true", help="the gradient-masking checklist, stored like an attack")
    p.add_argument(
        "--threats",
        default=None,
        help=f"comma-separated, any of {','.join(THREATS)}: the threat models of the --attacks and the --checklist"
        " (default: all of them)",
    )
    p.add_argument(
        "--score-alignment",
        action="store_true",
        help="the PAG score against the score-based targets of a denoiser (--denoiser, --score-sigma)",
    )
    p.add_argument("--denoiser", default=None, help="denoiser run of --score-alignment (default: the newest complete)")
    p.add_argument(
        "--score-sigma", type=float, default=ObjectiveConfig.score_sigma, help="noise level of the score-based targets"
    )
    p.add_argument(
        "--certify",
        action="store_true",
        help="randomized smoothing's CERTIFY for a run trained with Gaussian noise (objective gaussian_noise)",
    )
    p.add_argument(
        "--pag-score", action="store_true", help="the PAG score against an adversarially trained reference run"
    )
    p.add_argument(
        "--smoothed-draws",
        type=int,
        default=None,
        metavar="M",
        help="with --run: evaluate the soft smoothed classifier of a run trained with Gaussian noise, each forward"
        " pass averaging M noise draws (--attacks pgd20,pgd100, --pag-score, --pictures)",
    )
    p.add_argument(
        "--pictures", action="store_true", help="the PAG pictures of the smoothed classifier (with --smoothed-draws)"
    )
    p.add_argument("--subset", type=int, default=None, help="fixed seeded subset of the test set (default: all of it)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the subset and of the attacks' random starts")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no new chunk of images after this many minutes; run it again to go on (stored chunks are kept)",
    )
    p.add_argument("--source", default=None, help="vanilla run for the transfer check (default: one from the store)")
    p.add_argument(
        "--reference", default=None, help="adversarially trained run for the PAG score (default: one from the store)"
    )
    p.add_argument(
        "--reduced-for-tests",
        action="store_true",
        help="tiny AutoAttack and checklist budgets, labelled as such (code tests only, never results)",
    )
    _add_data_arguments(p)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> dict:
    if args.max_minutes is not None:
        check_nonnegative("max_minutes", args.max_minutes)  # 0: start nothing new, report what is unfinished
    store = RunStore(args.runs)
    settings = EvaluationConfig(**given(args, EvaluationConfig)).validate()
    names = _evaluation_names(args)
    args.threats = _threats(args, names)
    if names is None and (args.smoothed_draws is not None):
        raise ConfigError("--smoothed-draws goes with the evaluations to run on the smoothed classifier (see --help)")
    if args.table:
        return _run_evaluate_table(args, store, names)
    if args.scale is not None:
        raise ConfigError("--scale goes with --table; a run already has its scale")
    run = store.find(args.run)
    config = TrainConfig.from_identity(run.params)
    data = prepare_data(config, _dataset(args, config.data.dataset))
    device = resolve_device(args.device)
    model = run.load_model(device=device)
    if names is None:
        metrics = evaluate_run(run, model, data, settings, device=device, progress=not args.no_progress)
        return {"run": run.name, "metrics": metrics}
    lines = _evaluate_with_attacks(args, store, run, model, data, names, device)
    return {"run": run.name, "evaluations": lines}


def _evaluation_names(args: argparse.Namespace) -> list[str] | None:
    """The stored evaluations asked for: the --attacks, then the checklist, the PAG scores, the
    certification and the smoothed pictures; None when none is asked for (the final evaluation again)."""
    extras = {
        "checks": args.checklist,
        "pag_score": args.pag_score,
        "score_alignment": args.score_alignment,
        "certify": args.certify,
        "pictures": args.pictures,
    }
    if args.attacks is None and not any(extras.values()):
        return None
    attacks = _comma_list(args.attacks or "")
    if args.attacks is not None and (not attacks or any(n not in ATTACKS for n in attacks)):
        raise ConfigError(f"attacks must be a comma-separated list of {', '.join(ATTACKS)}; got {args.attacks!r}")
    return attacks + [name for name, asked in extras.items() if asked]


def _comma_list(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _threats(args: argparse.Namespace, names: list[str] | None) -> tuple[str, ...]:
    """The threat models of --threats, refused where no evaluation asked for has one."""
    if args.threats is None:
        return THREATS
    if not set(names or ()) & {*ATTACKS, "checks"}:
        raise ConfigError("--threats goes with --attacks or --checklist, the evaluations that have a threat model")
    return check_choices("threats", _comma_list(args.threats), THREATS)


def _denoiser_for(args, store, dataset: str, kind: str, names: list[str], device) -> tuple[str, Denoiser, float] | None:
    """(name, model, σ) of the denoiser that --score-alignment compares with: --denoiser, or the newest
    complete denoiser run of ``dataset`` and ``kind``; None when the score alignment is not asked for."""
    if "score_alignment" not in names:
        return None
    check_positive("score_sigma", args.score_sigma)
    denoisers = denoiser_store(store.root)
    run = denoisers.find(args.denoiser) if args.denoiser else newest_denoiser(denoisers, dataset, kind)
    if run is None:
        raise ConfigError(f"--score-alignment needs a complete {dataset} denoiser run: python -m pagcore denoiser")
    return run.name, load_denoiser(run, device), args.score_sigma


def _evaluate_with_attacks(args, store, run, model, data, names, device) -> list[dict]:
    source, reference = companions(store, run, names, args.source, args.reference, device)
    denoiser = _denoiser_for(args, store, run.params["dataset"], run.kind, names, device)
    return evaluate_stored_run(
        run,
        model,
        data,
        names,
        subset=args.subset,
        seed=args.subset_seed,
        device=device,
        source=source,
        reference=reference,
        denoiser=denoiser,
        budgets=BudgetConfig.for_tests() if args.reduced_for_tests else BudgetConfig(),
        smoothed_draws=args.smoothed_draws,
        threats=args.threats,
        progress=not args.no_progress,
        deadline=Deadline.after(args.max_minutes),
    )


def _run_evaluate_table(args: argparse.Namespace, store, names: list[str] | None) -> dict:
    if names is None:
        raise ConfigError("--table evaluates with --attacks or the other evaluations' options; name them")
    if args.subset is not None:
        raise ConfigError("--table chooses each run's subset (see --help); --subset is for one --run")
    if args.smoothed_draws is not None:
        raise ConfigError("--smoothed-draws evaluates one noise-trained --run")
    if args.scale is None:
        raise ConfigError("--table needs --scale (cpu or paper)")
    device = resolve_device(args.device)
    result = evaluate_table(
        store,
        args.table,
        {"scale": args.scale},
        args.kind,
        lambda: _dataset(args, args.table),
        names,
        device=device,
        budgets=BudgetConfig.for_tests() if args.reduced_for_tests else BudgetConfig(),
        deadline=Deadline.after(args.max_minutes),
        progress=not args.no_progress,
        source_name=args.source,
        reference_name=args.reference,
        denoiser=_denoiser_for(args, store, args.table, args.kind, names, device),
        threats=args.threats,
    )
    return {"table": args.table, "scale": args.scale, **result}


def _add_selftest_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "selftest",
        help="every code path on this machine's device, on a few batches: the first thing to run on a new machine",
        description="Each target source, the gradient strategies, a resumed run, the teachers, RIGD, PGD, AutoAttack,"
        " the checklist and the PAG score, on tiny subsets (the paper's width on CUDA). Exits 1 naming the first path"
        " that fails.",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--data", default="", help="CIFAR-10 .npz or torchvision root (default: synthetic images)")
    p.add_argument("--stl10", default="", help="STL-10 .npz or torchvision root (default: synthetic images)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed after)")
    p.set_defaults(handler=_run_selftest)


def _run_selftest(args: argparse.Namespace) -> dict:
    data = synthetic_data()
    for name, path in (("cifar10", args.data), ("stl10", args.stl10)):
        if path:
            data[name] = load_data(name, path)
    if args.work is not None:
        return run_selftest(args.work, data, args.device)
    with tempfile.TemporaryDirectory(prefix="pagcore-selftest-") as work:
        return run_selftest(Path(work), data, args.device)


def _add_ceiling_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ceiling",
        help="the accuracy a classifier of the distances to the class means reaches, recorded like a run",
        description="Measures the ceiling of a perfectly aligned class-mean PAG model (pagcore.evaluate.ceiling) on"
        " the whole dataset and writes it, with its record, under runs/measurements/.",
    )
    p.add_argument("--dataset", required=True, choices=sorted(SPECS))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=".npz file or torchvision root of the dataset")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("TRAIN", "TEST"), help="random images (tests)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs of the linear model and the MLP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measurements", type=Path, default=None, help="output folder (default: runs/measurements)")
    p.set_defaults(handler=_run_ceiling)


def _run_ceiling(args: argparse.Namespace) -> dict:
    check_nonnegative("epochs", args.epochs)
    data = load_data(args.dataset, args.data or "", synthetic=args.synthetic)
    kind = kind_of(synthetic=bool(args.synthetic), subset=False)
    record = measure_ceiling(data, args.dataset, kind=kind, epochs=args.epochs, seed=args.seed, root=args.measurements)
    return {
        "dataset": args.dataset,
        "kind": kind,
        "accuracy": record["accuracy"],
        "wall_seconds": record["wall_seconds"],
    }


def _add_denoiser_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "denoiser",
        help="train (or continue) the class-conditional denoiser behind score-based targets, then measure it",
        description="Trains the denoiser of pagcore.paper.denoiser in resumable sessions (runs/denoisers/<run>/);"
        " once trained, measures its denoising error and its implicit classifier (pagcore.evaluate.denoiser_quality).",
    )
    add_group_arguments(p, "denoiser", DenoiserConfig)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=".npz file or torchvision root of the dataset")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("TRAIN", "TEST"), help="random images (tests)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this long; run again to go on")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quality-images", type=int, default=200, help="test images the quality is measured on")
    p.add_argument("--runs", default=None, help="run-store directory; denoisers go to its denoisers/ (default: runs/)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run_denoiser)


def _run_denoiser(args: argparse.Namespace) -> dict:
    config = DenoiserConfig(**given(args, DenoiserConfig)).validate()
    check_positive_int("quality_images", args.quality_images)
    deadline = Deadline.after(ExecutionConfig(max_minutes=args.max_minutes).validate().max_minutes)
    data = load_data(config.dataset, args.data or "", synthetic=args.synthetic)
    kind, device = kind_of(synthetic=bool(args.synthetic), subset=False), resolve_device(args.device)
    run, finished = train_denoiser(
        config,
        data,
        denoiser_store(args.runs),
        deadline=deadline,
        device=device,
        progress=not args.no_progress,
        kind=kind,
    )
    result = {"run": run.name, "kind": kind, "finished": finished, "wall_seconds": run.record.get("wall_seconds")}
    if finished and run.metrics is None:
        measure_denoiser_run(run, data, images=args.quality_images, device=device)
    if run.metrics is not None:
        result["implicit_classifier"] = run.metrics["implicit_classifier"]["accuracy"]
    return result


def _add_posterior_gap_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "posterior-gap",
        help="how far each source's targets are from being log-posterior gradients, recorded like a run",
        description="Measures the posterior gap (pagcore.evaluate.posterior_gap) of every model-free source's targets,"
        " and of the score-based ones when a denoiser is trained, on the first training images, and writes it, with"
        " its record, under runs/measurements/.",
    )
    p.add_argument("--dataset", default="cifar10", choices=sorted(SPECS))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=".npz file or torchvision root of the dataset")
    source.add_argument("--synthetic", nargs=2, type=int, metavar=("TRAIN", "TEST"), help="random images (tests)")
    p.add_argument("--images", type=int, default=500, help="training images measured")
    p.add_argument("--denoiser", default=None, help="denoiser run of the score-based targets (default: the newest)")
    p.add_argument("--no-denoiser", action="store_true", help="measure the model-free sources only")
    p.add_argument(
        "--score-sigma", type=float, default=ObjectiveConfig.score_sigma, help="noise level of the score-based targets"
    )
    p.add_argument("--runs", default=None, help="run-store directory (default: runs/)")
    p.add_argument("--measurements", type=Path, default=None, help="output folder (default: runs/measurements)")
    p.set_defaults(handler=_run_posterior_gap)


def _run_posterior_gap(args: argparse.Namespace) -> dict:
    check_positive_int("images", args.images)
    check_positive("score_sigma", args.score_sigma)
    kind = kind_of(synthetic=bool(args.synthetic), subset=False)
    denoisers = denoiser_store(args.runs)
    run = None
    if not args.no_denoiser:
        run = denoisers.find(args.denoiser) if args.denoiser else newest_denoiser(denoisers, args.dataset, kind)
    if run is not None and run.params.get("dataset") != args.dataset:
        raise ConfigError(f"denoiser {run.name} learned {run.params.get('dataset')}, not {args.dataset}")
    data = load_data(args.dataset, args.data or "", synthetic=args.synthetic)
    denoiser = None if run is None else (run.name, load_denoiser(run), args.score_sigma)
    record = measure_posterior_gap(
        data,
        args.dataset,
        kind=kind,
        images=args.images,
        denoiser=denoiser,
        store=RunStore(args.runs),
        root=args.measurements,
    )
    return {"dataset": args.dataset, "kind": kind, "gaps": record["gaps"], "wall_seconds": record["wall_seconds"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pagcore", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_toy_parser(subparsers)
    _add_train_parser(subparsers)
    _add_table_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_selftest_parser(subparsers)
    _add_ceiling_parser(subparsers)
    _add_denoiser_parser(subparsers)
    _add_posterior_gap_parser(subparsers)

    _add_weights_parser(subparsers)

    add_sweep_parser(subparsers)
    return parser


def _add_weights_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "weights",
        help="keep a finished run's final weights in git history instead of the tree, or restore them",
        description="archive: the weights, already committed, are named by the run's weights.json and taken out of"
        " the index (the tree travels with every GPU call). restore: write them back from git history.",
    )
    p.add_argument("action", choices=("archive", "restore"))
    p.add_argument("runs", nargs="*", help="run names or directories")
    p.add_argument("--all", action="store_true", help="restore: every archived run in the store")
    p.add_argument("--runs-dir", type=Path, default=None, help="the run store (default: runs/)")
    p.set_defaults(handler=_run_weights)


def _run_weights(args: argparse.Namespace) -> dict:
    store = RunStore(args.runs_dir)
    if args.all and args.action == "archive":
        raise ConfigError("archive names its runs: only weights already committed can be archived")
    if bool(args.all) == bool(args.runs):
        raise ConfigError("name the runs, or give --all (restore only)")
    chosen = (
        [run for run in store.runs() if weights.is_archived(run.path)] if args.all else list(map(store.find, args.runs))
    )
    done = {}
    try:
        for run in chosen:
            if args.action == "archive":
                done[run.name] = weights.archive(run.path)["git_blob"]
            else:
                done[run.name] = str(weights.restore(run.path))
    except weights.WeightsError as error:
        raise ConfigError(str(error)) from None
    return {"action": args.action, "runs": done}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # ``handler``, not ``run``: evaluate's --run option would overwrite the dispatcher.
        result = args.handler(args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result.get("ok", True) else 1
