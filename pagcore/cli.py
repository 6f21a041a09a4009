"""Command line: the book's experiments without Jupyter.

    python -m pagcore toy --seeds 0 1 2 3 4

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
    p.add_argument("--attack-norm", default=d.attack_norm, help=f"PGD threat model: {', '.join(NORMS)}")
    p.add_argument("--attack-eps", type=float, default=d.attack_eps)
    p.add_argument("--attack-steps", type=int, default=d.attack_steps)
    p.add_argument("--attack-step-size", type=float, default=d.attack_step_size)
    p.add_argument("--attack-random-start", action="store_true", default=d.attack_random_start)
    p.add_argument("--record", help="also write the full result and its provenance record to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=_run_toy)


def _run_toy(args: argparse.Namespace) -> dict:
    from .toy import ToyConfig, run_toy_experiment, toy_record

    config = ToyConfig(
        seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lam=args.lam,
        source=args.source, gradient=args.gradient, pool_size=args.pool_size,
        attack_norm=args.attack_norm, attack_eps=args.attack_eps, attack_steps=args.attack_steps,
        attack_step_size=args.attack_step_size, attack_random_start=args.attack_random_start,
    ).validate()
    experiment = run_toy_experiment(config, progress=not args.no_progress)
    if args.record:
        from .provenance import write_json_atomic

        write_json_atomic(args.record, toy_record(experiment))
    return experiment.summary()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pagcore", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_toy_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
