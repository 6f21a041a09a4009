"""Command line: the book's experiments without Jupyter.

    python -m pagcore toy --seeds 0 1 2 3 4
    python -m pagcore train --scale cpu --dataset cifar10 --data .data/cifar10.npz --objective pag --source class_mean
    python -m pagcore table --scale cpu --dataset cifar10 --data .data/cifar10.npz --max-minutes 170
    python -m pagcore evaluate --run <run name or directory> --data .data/cifar10.npz
    python -m pagcore evaluate --run <run> --data .data/cifar10.npz \
        --attacks pgd20,pgd100,autoattack,checks,pag_score --subset 1000
    python -m pagcore evaluate --table cifar10 --scale cpu --data .data/cifar10.npz \
        --attacks pgd100,autoattack,checks,pag_score --max-minutes 150
    python -m pagcore sweep train -p source one_image class_mean -p seed 0 1 ...   (see pagcore/sweep.py)
    python -m pagcore campaign --data .data/cifar10.npz --out $OUT --minutes 8.5   (see pagcore/campaign.py)

Progress goes to stderr; the last line of stdout is one JSON object with the results, so
scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .validation import ConfigError


def _add_toy_parser(subparsers) -> None:
    from .config import add_group_arguments
    from .toy import ToyConfig

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
    from .config import given
    from .toy import ToyConfig, run_toy_experiment, toy_record

    config = ToyConfig(**given(args, ToyConfig)).validate()
    experiment = run_toy_experiment(config, progress=not args.no_progress)
    if args.record:
        from .provenance import write_json_atomic

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
    from .config import ExecutionOptions, add_arguments, add_group_arguments
    from .evaluation import EvaluationSettings

    p = subparsers.add_parser(
        "train",
        help="train (or resume) one run on CIFAR-10 or STL-10 (Section 5.2)",
        description="Options left out take the scale's preset, then the paper's values.",
    )
    add_arguments(p)
    add_group_arguments(p, "execution", ExecutionOptions)
    add_group_arguments(p, "evaluation", EvaluationSettings)
    _add_data_arguments(p)
    p.set_defaults(handler=_run_train)


def _dataset(args: argparse.Namespace, name: str):
    from .experiments import load_data

    return load_data(name, args.data, download=args.download, synthetic=args.synthetic)


def _run_train(args: argparse.Namespace) -> dict:
    from .config import ExecutionOptions, from_arguments, given
    from .evaluation import EvaluationSettings
    from .runs import RunStore
    from .training import train

    # Every parameter is checked before any data is read.
    config = from_arguments(args).resolve()
    options = ExecutionOptions(**given(args, ExecutionOptions)).validate()
    evaluation = EvaluationSettings(**given(args, EvaluationSettings)).validate()
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
    from .config import ExecutionOptions, add_arguments, add_group_arguments
    from .evaluation import EvaluationSettings
    from .experiments import ROWS

    p = subparsers.add_parser(
        "table",
        help="train (or resume) the missing runs of a results table, teachers before their students",
        description=(
            "The rows of Table 1 (CIFAR-10) or Table 2 (STL-10), in order: complete runs are skipped, an"
            " interrupted one resumes. With --max-minutes it stops cleanly when the time is up; run it"
            " again to go on. Shared options (scale, epochs, seed, ...) apply to every row."
        ),
    )
    p.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=list(ROWS),
        metavar="ROW",
        help=f"the rows to train, in this order (default: all: {' '.join(ROWS)})",
    )
    add_arguments(p)
    add_group_arguments(p, "execution", ExecutionOptions)
    add_group_arguments(p, "evaluation", EvaluationSettings)
    _add_data_arguments(p)
    p.set_defaults(handler=_run_table)


def _run_table(args: argparse.Namespace) -> dict:
    import time
    from dataclasses import replace

    from .config import ExecutionOptions, given, given_knobs
    from .evaluation import EvaluationSettings
    from .experiments import ROWS, RealDataExperiment
    from .runs import RunStore
    from .training import check_trainable, kind_of

    knobs = given_knobs(args)
    row_knobs = sorted({k for row in ROWS.values() for k in row.knobs} | {"teacher"})
    if set(knobs) & set(row_knobs):
        raise ConfigError(f"{', '.join(sorted(set(knobs) & set(row_knobs)))}: each row sets its own (see --rows)")
    dataset = knobs.pop("dataset", "cifar10")
    options = ExecutionOptions(**given(args, ExecutionOptions)).validate()
    evaluation = EvaluationSettings(**given(args, EvaluationSettings)).validate()
    subset = bool(knobs.get("train_subset") or knobs.get("test_subset"))
    kind = options.kind or kind_of(synthetic=args.synthetic, subset=subset)
    experiment = RealDataExperiment(dataset, knobs, RunStore(args.runs), kind=kind)
    for row in args.rows:  # every row resolves, and may be trained, before any data is read
        check_trainable(experiment.config(row), kind)
    data = _dataset(args, dataset)
    deadline = None if options.max_minutes is None else time.monotonic() + 60 * options.max_minutes
    rows = {}
    for row in args.rows:
        minutes_left = None if deadline is None else (deadline - time.monotonic()) / 60
        if minutes_left is not None and minutes_left < 0.5:
            break
        result = experiment.train(row, data, replace(options, kind=kind, max_minutes=minutes_left), evaluation)
        rows[row] = {"run": result.run.name, "finished": result.finished, "metrics": result.run.metrics}
        if not result.finished:
            break
    complete = [row for row in args.rows if rows.get(row, {}).get("finished")]
    return {"dataset": dataset, "kind": kind, "rows": rows, "complete": len(complete) == len(args.rows)}


def _add_evaluate_parser(subparsers) -> None:
    from .config import KINDS, add_group_arguments
    from .evaluation import EvaluationSettings
    from .run_evaluations import EVALUATIONS

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a stored run again, or add attacks and checks to it",
        description="Without --attacks: the final evaluation again (clean and PGD accuracy, PAG pictures). "
        "With --attacks: extra evaluations stored in the run's evaluations/ folder.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run name or directory")
    which.add_argument(
        "--table",
        metavar="DATASET",
        choices=("cifar10", "stl10"),
        help="with --attacks: every complete run of this dataset at --scale, on a larger seeded subset of the test set"
        " for vanilla, the best PAG row and both RIGD rows (CIFAR-10 1,000 images, STL-10 100) and a smaller one for the"
        " others (500, 50), those four first (--subset is then not allowed)",
    )
    p.add_argument("--scale", default=None, help="the table's scale, with --table (cpu or paper)")
    p.add_argument(
        "--kind", default="real", choices=KINDS, help="with --table: the kind of runs (smoke only in code tests)"
    )
    add_group_arguments(p, "final evaluation (without --attacks)", EvaluationSettings)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--attacks",
        default=None,
        help=f"comma-separated, any of {','.join(EVALUATIONS)}: stored per settings key, computed once",
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
    from .config import TrainConfig, given
    from .devices import resolve_device
    from .evaluation import EvaluationSettings, evaluate_run
    from .runs import RunStore
    from .training import prepare_data

    store = RunStore(args.runs)
    settings = EvaluationSettings(**given(args, EvaluationSettings)).validate()
    names = _attack_names(args.attacks) if args.attacks is not None else None
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


def _attack_names(attacks: str) -> list[str]:
    from .run_evaluations import EVALUATIONS

    names = [name.strip() for name in attacks.split(",") if name.strip()]
    if not names or any(n not in EVALUATIONS for n in names):
        raise ConfigError(f"attacks must be a comma-separated list of {', '.join(EVALUATIONS)}; got {attacks!r}")
    return names


def _evaluate_with_attacks(args, store, run, model, data, names, device) -> list[dict]:
    from .run_evaluations import Budgets, companion_run, evaluate_stored_run

    source = companion_run(store, run, args.source, "cross_entropy", device) if "checks" in names else None
    reference = companion_run(store, run, args.reference, "adversarial", device) if "pag_score" in names else None
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
        budgets=Budgets.for_tests() if args.reduced_for_tests else Budgets(),
        progress=not args.no_progress,
        max_minutes=args.max_minutes,
    )


def _run_evaluate_table(args: argparse.Namespace, store, names: list[str] | None) -> dict:
    from .devices import resolve_device
    from .run_evaluations import Budgets, evaluate_table

    if names is None:
        raise ConfigError("--table evaluates with --attacks; name them")
    if args.subset is not None:
        raise ConfigError("--table chooses each run's subset (see --help); --subset is for one --run")
    if args.scale is None:
        raise ConfigError("--table needs --scale (cpu or paper)")
    result = evaluate_table(
        store,
        args.table,
        {"scale": args.scale},
        args.kind,
        lambda: _dataset(args, args.table),
        names,
        device=resolve_device(args.device),
        budgets=Budgets.for_tests() if args.reduced_for_tests else Budgets(),
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
        source_name=args.source,
        reference_name=args.reference,
    )
    return {"table": args.table, "scale": args.scale, **result}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pagcore", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_toy_parser(subparsers)
    _add_train_parser(subparsers)
    _add_table_parser(subparsers)
    _add_evaluate_parser(subparsers)
    from .sweep import add_sweep_parser  # the sweep's options live with the sweep

    add_sweep_parser(subparsers)
    from .campaign import add_campaign_parser  # likewise the GPU campaign's

    add_campaign_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # ``handler``, not ``run``: evaluate's --run option would overwrite the dispatcher.
        result = args.handler(args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
