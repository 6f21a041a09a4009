"""Command line: the book's experiments without Jupyter.

    python -m pagcore toy --seeds 0 1 2 3 4
    python -m pagcore train --dataset cifar10 --data .data/cifar10.npz --method class_mean
    python -m pagcore evaluate --run <run name or directory> --data .data/cifar10.npz
    python -m pagcore evaluate --run <run> --data .data/cifar10.npz \
        --attacks pgd20,pgd100,autoattack,checks,pag_score --subset 1000
    python -m pagcore sweep train -p method vanilla class_mean -p seed 0 1 ...   (see pagcore/sweep.py)

Progress goes to stderr; the last line of stdout is one JSON object with the results, so
scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .attacks import NORMS
from .objective import GRADIENT_KINDS
from .targets import MODEL_FREE_SOURCES
from .validation import ConfigError


def _add_toy_parser(subparsers) -> None:
    from .toy import ToyConfig

    d = ToyConfig()
    p = subparsers.add_parser("toy", help="the 2-D toy experiment (Section 5.1)", description="Train vanilla and PAG toy models per seed and attack them with PGD.")
    p.add_argument("--seeds", type=int, nargs="+", default=d.seeds, help="seeds; each trains one vanilla and one PAG model (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lam", type=float, default=d.lam, help="weight of the PAG term, lambda in Eq. (1)")
    p.add_argument("--source", default=d.source, help=f"target-gradient source: {', '.join(MODEL_FREE_SOURCES)}")
    p.add_argument("--gradient", default=d.gradient, help=f"what is differentiated: {', '.join(GRADIENT_KINDS)}")
    p.add_argument("--pool-size", type=int, default=d.pool_size, help="nearest-neighbour pool per class")
    p.add_argument("--classes-per-image", type=int, default=None, help="k target classes sampled per point (default: all)")
    p.add_argument("--attack-norm", default=d.attack_norm, help=f"PGD threat model: {', '.join(NORMS)}")
    p.add_argument("--attack-eps", type=float, default=d.attack_eps)
    p.add_argument("--attack-steps", type=int, default=d.attack_steps)
    p.add_argument("--attack-step-size", type=float, default=d.attack_step_size)
    p.add_argument("--attack-random-start", action="store_true", default=d.attack_random_start)
    p.add_argument("--record", help="also write the full result and its provenance record to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_run_toy)


def _run_toy(args: argparse.Namespace) -> dict:
    from .toy import ToyConfig, run_toy_experiment, toy_record

    config = ToyConfig(
        seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lam=args.lam,
        source=args.source, gradient=args.gradient, pool_size=args.pool_size, classes_per_image=args.classes_per_image,
        attack_norm=args.attack_norm, attack_eps=args.attack_eps, attack_steps=args.attack_steps,
        attack_step_size=args.attack_step_size, attack_random_start=args.attack_random_start,
    ).validate()
    experiment = run_toy_experiment(config, progress=not args.no_progress)
    if args.record:
        from .provenance import write_json_atomic

        write_json_atomic(args.record, toy_record(experiment))
    return experiment.summary()


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="torchvision root directory or .npz file (x_train, y_train, x_test, y_test)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data")
    p.add_argument("--synthetic", type=int, nargs=2, metavar=("TRAIN", "TEST"),
                   help="use random images of the dataset's shape instead of --data (smoke tests only)")
    p.add_argument("--runs", default=None, help="run-store directory (default: runs/ in the repository)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_train_parser(subparsers) -> None:
    from .training import METHODS, RIGD_TARGETS, TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser("train", help="train (or resume) one run on CIFAR-10 or STL-10 (Section 5.2)")
    p.add_argument("--dataset", default=d.dataset, help="cifar10 or stl10")
    p.add_argument("--method", default=d.method, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--lam", type=float, default=None, help="lambda of Eq. (1) (default: the paper's Table 3)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 for CIFAR-10, 32 for STL-10")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-milestones", type=float, nargs="*", default=d.lr_milestones, help="fractions of the epochs")
    p.add_argument("--lr-factors", type=float, nargs="*", default=d.lr_factors, help="lr multiplier from each milestone on")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--gradient", default=d.gradient, help="logit or log_softmax")
    p.add_argument("--classes-per-image", type=int, default=None, help="k target classes per image (default: all)")
    p.add_argument("--pool-size", type=int, default=d.pool_size)
    p.add_argument("--teacher", default="", help="RIGD: run name or directory of an adversarially trained model")
    p.add_argument("--rigd-targets", default=d.rigd_targets, help=" or ".join(RIGD_TARGETS))
    p.add_argument("--adv-norm", default=d.adv_norm, help="adversarial training: linf or l2")
    p.add_argument("--adv-eps", type=float, default=None, help="adversarial training radius (default: the paper's)")
    p.add_argument("--adv-steps", type=int, default=d.adv_steps)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--width", type=int, default=d.width, help="ResNet-18 width (64; smaller only for smoke tests)")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--eval-pgd-steps", type=int, default=d.eval_pgd_steps)
    p.add_argument("--picture-images", type=int, default=d.picture_images)
    p.add_argument("--strategy", default="auto", help="auto, loop, vmap or replicate")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (and resumably) after this long")
    p.add_argument("--retrain", action="store_true", help="discard an existing run of these parameters")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    _add_data_arguments(p)
    p.set_defaults(handler=_run_train)


def _dataset(args: argparse.Namespace, name: str):
    from .data import load_dataset, synthetic_dataset
    from .validation import ConfigError

    if args.synthetic:
        return synthetic_dataset(name, *args.synthetic)
    if not args.data:
        raise ConfigError("data is required: a torchvision root directory or an .npz file (or --synthetic TRAIN TEST)")
    return load_dataset(name, args.data, download=args.download)


def _run_train(args: argparse.Namespace) -> dict:
    from .runs import RunStore
    from .training import TrainConfig, train

    config = TrainConfig(
        dataset=args.dataset, method=args.method, lam=args.lam, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, lr_milestones=list(args.lr_milestones), lr_factors=list(args.lr_factors), seed=args.seed,
        gradient=args.gradient, classes_per_image=args.classes_per_image, pool_size=args.pool_size,
        teacher=args.teacher, rigd_targets=args.rigd_targets, adv_norm=args.adv_norm, adv_eps=args.adv_eps,
        adv_steps=args.adv_steps, augment=not args.no_augment, width=args.width, train_subset=args.train_subset,
        test_subset=args.test_subset, eval_pgd_steps=args.eval_pgd_steps, picture_images=args.picture_images,
    ).resolved().validate()  # every parameter is checked before any data is read
    data = _dataset(args, config.dataset)
    result = train(
        config, data, RunStore(args.runs), device=args.device, strategy=args.strategy,
        amp=False if args.no_amp else None, progress=not args.no_progress,
        checkpoint_every_steps=args.checkpoint_every, max_minutes=args.max_minutes,
        retrain=args.retrain, final_evaluation=not args.no_eval,
    )
    run = result.run
    return {"run": run.name, "path": str(run.path), "status": run.status, "finished": result.finished,
            "epochs_done": len(run.history), "metrics": run.metrics}


def _add_evaluate_parser(subparsers) -> None:
    from .run_evaluations import EVALUATIONS

    p = subparsers.add_parser(
        "evaluate", help="evaluate a stored run again, or add attacks and checks to it",
        description="Without --attacks: the final evaluation again (clean and PGD accuracy, PAG pictures). "
                    "With --attacks: extra evaluations stored in the run's evaluations/ folder.")
    p.add_argument("--run", required=True, help="run name or directory")
    p.add_argument("--pgd-steps", type=int, default=None, help="default: the run's own setting (20)")
    p.add_argument("--attacks", default=None,
                   help=f"comma-separated, any of {','.join(EVALUATIONS)}: stored per settings key, computed once")
    p.add_argument("--subset", type=int, default=None, help="fixed seeded subset of the test set (default: all of it)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the subset and of the attacks' random starts")
    p.add_argument("--source", default=None, help="vanilla run for the transfer check (default: one from the store)")
    p.add_argument("--reference", default=None,
                   help="adversarially trained run for the PAG score (default: one from the store)")
    p.add_argument("--reduced-for-tests", action="store_true",
                   help="tiny AutoAttack and checklist budgets, labelled as such (code tests only, never results)")
    _add_data_arguments(p)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> dict:
    from dataclasses import replace

    from .runs import RunStore
    from .training import TrainConfig, finish_run, load_run_model, prepare_data, resolve_device

    store = RunStore(args.runs)
    run = store.find(args.run)
    config = TrainConfig.from_params(run.params)
    if args.pgd_steps is not None:
        config = replace(config, eval_pgd_steps=args.pgd_steps)
    config.validate()
    if args.attacks is not None:
        from .run_evaluations import EVALUATIONS

        names = [name.strip() for name in args.attacks.split(",") if name.strip()]
        unknown = [n for n in names if n not in EVALUATIONS]
        if unknown or not names:
            raise ConfigError(
                f"attacks must be a comma-separated list of {', '.join(EVALUATIONS)}; got {args.attacks!r}")
    data = prepare_data(config, _dataset(args, config.dataset))
    device = resolve_device(args.device)
    model = load_run_model(run, device=device)
    if args.attacks is None:
        metrics = finish_run(run, model, data, config, device=device, progress=not args.no_progress)
        return {"run": run.name, "metrics": metrics}

    from .run_evaluations import Budgets, evaluate_stored_run

    source = _companion_run(store, run, args.source, "vanilla", device) if "checks" in names else None
    reference = _companion_run(store, run, args.reference, "adversarial", device) if "pag_score" in names else None
    lines = evaluate_stored_run(
        run, model, data, names, subset=args.subset, seed=args.subset_seed, device=device, source=source,
        reference=reference, budgets=Budgets.for_tests() if args.reduced_for_tests else Budgets(),
        progress=not args.no_progress,
    )
    return {"run": run.name, "evaluations": lines}


def _companion_run(store, run, reference: str | None, method: str, device):
    """(name, model) of the run named ``reference``, or else of a complete ``method`` run of the same
    dataset and kind from the store (the L2 one first for adversarial training); None if there is none."""
    from .training import load_run_model

    if reference:
        chosen = store.find(reference)
    else:
        candidates = [r for r in store.select(kind=run.kind, dataset=run.params["dataset"], method=method)]
        others = [r for r in candidates if r.name != run.name] or candidates
        others.sort(key=lambda r: (r.params.get("adv_norm") != "l2", r.name))
        if not others:
            return None
        chosen = others[0]
    if chosen.params.get("method") != method:
        raise ConfigError(f"{chosen.name} is a {chosen.params.get('method')!r} run; a {method!r} run is needed here")
    return chosen.name, load_run_model(chosen, device=device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pagcore", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_toy_parser(subparsers)
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    from .sweep import add_sweep_parser  # the sweep's options live with the sweep

    add_sweep_parser(subparsers)
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
