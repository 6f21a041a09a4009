"""What the stronger evaluations cost on this machine, per real run: figures to plan evaluation sessions by.

    python benchmarks/evaluation_cost.py --data .data/cifar10.npz --runs cifar10-cpu-vanilla-e20-s0-22f4e721cb \
        cifar10-cpu-class_mean-lam0.4-e20-s0-2021385f6a --images 200

For each stored run (its final weights), on the first ``--images`` images of a fixed seeded
subset of the test set, in float32:

* the paper's PGD-20 (last iterate, every image through every step), timed, with the number of
  images passed through the model, so that its seconds per image-pass price the others;
* PGD-100 with 5 restarts, best iterate, timed and counted: an image leaves the batch once it is
  fooled (``pagcore.paper.attacks.PGD``), so its passes fall far below the unpruned
  ``images x (1 + restarts x (steps + 1))``; the ratio of the two counts, and the seconds the
  unpruned attack would take at PGD-20's price per pass, are printed beside the measured time;
* AutoAttack's standard version (both norms), timed, when ``pyautoattack`` is installed
  (``--no-autoattack`` skips it).

Results go to benchmarks/results/evaluation_cost-<date>.json with the machine, torch and git sha.
This is a measurement script, not a test, and none of its numbers is a result of the book.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pagcore.config import TrainConfig  # noqa: E402
from pagcore.data import as_float  # noqa: E402
from pagcore.evaluate.autoattack import AutoAttackConfig, run_autoattack  # noqa: E402
from pagcore.evaluate.final import PAPER_PGD_EPS, STANDARD_EPS  # noqa: E402
from pagcore.evaluate.stored import EvaluationSubset  # noqa: E402
from pagcore.orchestrate.experiments import load_data  # noqa: E402
from pagcore.paper.attacks import PGD  # noqa: E402 (after the path set-up above)
from pagcore.store.provenance import device_description, running_revision, utc_now, write_json_atomic  # noqa: E402
from pagcore.store.runs import RunStore  # noqa: E402


class CountingModel(nn.Module):
    """The model, counting the images passed through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x):
        self.images += len(x)
        return self.model(x)


def timed_attack(model: nn.Module, attack: PGD, x, y) -> dict:
    counted = CountingModel(model).eval()
    start = time.perf_counter()
    x_adv = attack(counted, x, y, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return {"seconds": round(seconds, 2), "image_passes": counted.images, "robust": robust}


def measure_run(run, data, images: int, autoattack: bool) -> dict:
    model = run.load_model(device="cpu").eval()
    chosen = EvaluationSubset.draw(len(data.x_test), images, seed=0)
    x, y = as_float(data.x_test[chosen.indices]), data.y_test[chosen.indices]
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    result: dict = {"run": run.name, "images": len(x), "clean": clean, "norms": {}}
    for norm in ("linf", "l2"):
        eps = PAPER_PGD_EPS[data.name][norm]
        paper = PGD.paper_real_data(norm, eps, 20)
        strong = PGD.paper_real_data(norm, eps, 100, restarts=5, keep_best=True)
        measured = {"pgd20": timed_attack(model, paper, x, y), "pgd100x5": timed_attack(model, strong, x, y)}
        per_pass = measured["pgd20"]["seconds"] / measured["pgd20"]["image_passes"]
        unpruned = len(x) * (1 + strong.restarts * (strong.steps + 1))
        measured["pgd100x5"]["unpruned_image_passes"] = unpruned
        measured["pgd100x5"]["passes_saved_ratio"] = round(unpruned / measured["pgd100x5"]["image_passes"], 2)
        measured["pgd100x5"]["unpruned_seconds_at_pgd20_price"] = round(unpruned * per_pass, 1)
        if autoattack:
            settings = AutoAttackConfig(norm, STANDARD_EPS[data.name][norm])
            outcome = run_autoattack(model, x, y, settings)
            measured["autoattack"] = {"seconds": outcome["seconds"], "robust": outcome["robust"]}
        result["norms"][norm] = measured
        print(f"{run.name} {norm}: {measured}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help=".npz file of the runs' dataset")
    parser.add_argument("--runs", nargs="+", required=True, help="stored runs (names or directories)")
    parser.add_argument("--images", type=int, default=200, help="test images per run (a fixed seeded subset)")
    parser.add_argument("--no-autoattack", action="store_true", help="skip AutoAttack")
    parser.add_argument("--store", default=None, help="run store (default: runs/)")
    args = parser.parse_args(argv)
    store = RunStore(args.store)
    runs = [store.find(name) for name in args.runs]  # every run is found before any data is read
    datasets = {TrainConfig.from_identity(run.params).data.dataset for run in runs}
    if len(datasets) != 1:
        parser.error(f"the runs must share one dataset; got {sorted(datasets)}")
    data = load_data(datasets.pop(), args.data)
    autoattack = not args.no_autoattack and importlib.util.find_spec("pyautoattack") is not None
    started = time.perf_counter()
    results = [measure_run(run, data, args.images, autoattack) for run in runs]
    out = ROOT / "benchmarks" / "results" / f"evaluation_cost-{date.today().isoformat()}.json"
    write_json_atomic(
        out,
        {
            "results": results,
            "device": device_description(torch.device("cpu")),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "git": running_revision(),
            "finished": utc_now(),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
