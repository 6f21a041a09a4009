"""The GPU campaign: one command that spends a lent GPU's minutes in a fixed order.

    python -m pagcore.campaign --data .data/cifar10.npz --out $OUT --minutes 8.5      # on the GPU machine
    python -m pagcore campaign --dry --out /tmp/out --minutes 1 --device cpu           # the same code, on CPU

Each call works within ``--minutes`` of wall clock and does, in order, what is not done yet:

1. **smoke**: every code path on CUDA, on a few batches (a 512-image subset, one epoch): each
   target source, every gradient strategy, a resumed run, the two adversarially trained
   teachers, RIGD from each (precomputed and on the fly), PGD L-inf/L2 and the PAG pictures,
   PGD-100, AutoAttack, the gradient-masking checklist and the PAG score with the tests'
   budgets (skipped, with a note, when ``pyautoattack`` is not installed), and STL-10's 96x96
   model. The first failure stops the campaign, with its traceback in the report;
2. **benchmark**: ``benchmarks/pag_step.py`` at ResNet-18 width 64, batch 64; its fastest k = 10
   gradient strategy trains this campaign's runs, and its JSON (copied to
   ``benchmarks/results/``, then committed) makes that strategy :func:`pagcore.devices.default_strategy`'s;
3. **train**: the first paper-scale run of :data:`PRIORITY` that is not complete, in resumable
   slices of at most ``--slice-minutes`` (9): a run unfinished when the call's time is up
   continues from its checkpoint in the next call. Evaluation runs only when the minutes left
   allow it (``--eval-minutes``); otherwise the next call evaluates. A run that is blocked
   (no STL-10 data, a teacher's weights not staged) is reported and skipped;
4. **pack**: every record, metric, history, evaluation and picture into ``--out``, at most 8
   files of under 16 MiB: ``campaign-report.json``, ``campaign-results.tar.gz`` (split into
   parts if large) and as many checkpoint parts as the remaining room allows (the resumable
   checkpoint of an unfinished run, the final weights of a finished one); the report lists
   the parts still to bring back (``--steps pack`` brings them, without training).

State between calls lives in ``--work`` (``.data/campaign/``, ignored by git, so it stays on a
warm machine between calls): ``state.json`` and the campaign's run store ``runs/``, seeded at
each call from the repository's committed records. ``--dry`` runs the same code on synthetic
data with tiny widths and budgets (kind ``smoke``, never results); ``make test`` runs it.

Imports only torch, numpy, matplotlib, tqdm and the standard library (no Jupyter, papermill,
PyYAML or submitit: the GPU machine has none of them), so run it there as
``python -m pagcore.campaign``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STEPS = ("smoke", "benchmark", "train", "pack")
REPORT = "campaign-report.json"
DESCRIPTION = (
    "On the GPU machine, within --minutes: a smoke check of every CUDA code path, the step benchmark, "
    "the next paper-scale runs of the priority list in resumable slices, and the pack into --out "
    "(see pagcore/campaign.py and the README's GPU sessions)."
)
ARCHIVE = "campaign-results.tar.gz"


@dataclass(frozen=True)
class Entry:
    """One paper-scale run the book needs: a row of a table with its overrides, and its priority group."""

    group: int
    dataset: str
    row: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.dataset} {self.row}{extra}"


# The issue's order: Table 1's vanilla and class mean first, then the other model-free sources,
# then the teachers and RIGD, Table 4's extra seeds, Figure 5's other lambdas, and STL-10 (Table 2).
PRIORITY: tuple[Entry, ...] = (
    Entry(1, "cifar10", "vanilla"),
    Entry(1, "cifar10", "class_mean"),
    Entry(2, "cifar10", "one_image"),
    Entry(2, "cifar10", "nearest_neighbor"),
    Entry(3, "cifar10", "adversarial_linf"),
    Entry(3, "cifar10", "adversarial_l2"),
    Entry(3, "cifar10", "rigd_linf"),
    Entry(3, "cifar10", "rigd_l2"),
    Entry(4, "cifar10", "one_image", {"seed": 1}),
    Entry(4, "cifar10", "one_image", {"seed": 2}),
    Entry(5, "cifar10", "class_mean", {"lam": 0.01}),
    Entry(5, "cifar10", "class_mean", {"lam": 0.1}),
    Entry(5, "cifar10", "class_mean", {"lam": 1.0}),
    *(
        Entry(6, "stl10", row)
        for row in (
            "vanilla",
            "one_image",
            "class_mean",
            "nearest_neighbor",
            "adversarial_linf",
            "adversarial_l2",
            "rigd_linf",
            "rigd_l2",
        )
    ),
)


class Clock:
    """The call's wall-clock budget."""

    def __init__(self, minutes: float):
        self.start = time.perf_counter()
        self.deadline = self.start + 60 * minutes

    def left(self) -> float:
        """Seconds left."""
        return self.deadline - time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class Settings:
    """Everything a call needs, derived once from the command line (``--dry`` shrinks it)."""

    out: Path
    work: Path
    minutes: float
    steps: tuple[str, ...]
    device: str
    data: dict[str, str]  # dataset -> .npz path ('' when not staged)
    dry: bool = False
    slice_minutes: float = 9.0
    eval_minutes: float = 2.0
    pack_minutes: float = 0.5
    benchmark_minutes: float = 5.0
    commit: str = ""
    repo_runs: Path = REPO / "runs"

    @property
    def kind(self) -> str:
        return "smoke" if self.dry else "real"

    @property
    def train_knobs(self) -> dict[str, Any]:
        """The paper's scale; dry mode keeps the code path and shrinks the model and schedule."""
        if self.dry:
            return {"scale": "paper", "width": 4, "epochs": 2, "batch_size": 16}
        return {"scale": "paper"}

    @property
    def smoke_knobs(self) -> dict[str, Any]:
        # The paper's width on CUDA (its memory, channels-last and bf16 paths); tiny in dry mode.
        width = 4 if self.dry else 64
        subset = {"train_subset": 48, "test_subset": 8} if self.dry else {"train_subset": 512, "test_subset": 256}
        return {"scale": "paper", "width": width, "epochs": 1, "batch_size": 16 if self.dry else 64, **subset}


# -- state -------------------------------------------------------------------------------------------


def load_state(work: Path) -> dict:
    path = work / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"calls": [], "sent": {}}


def save_state(work: Path, state: dict) -> None:
    from .provenance import write_json_atomic

    write_json_atomic(work / "state.json", state)


def datasets(settings: Settings) -> dict:
    """The staged datasets (synthetic in dry mode); a dataset not staged is None."""
    from .data import load_dataset, synthetic_dataset

    if settings.dry:
        return {"cifar10": synthetic_dataset("cifar10", 64, 16), "stl10": synthetic_dataset("stl10", 16, 8)}
    return {name: load_dataset(name, path) if path else None for name, path in settings.data.items()}


# -- 1. smoke ----------------------------------------------------------------------------------------


def autoattack_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyautoattack") is not None


def smoke_paths(settings: Settings, data: dict) -> list[tuple[str, Callable[[], dict]]]:
    """(name, check) for every code path; each check trains or evaluates a few batches and returns facts."""
    from .config import ExecutionOptions
    from .evaluation import EvaluationSettings
    from .experiments import RealDataExperiment
    from .runs import RunStore

    root = settings.work / "smoke"
    if root.exists():
        shutil.rmtree(root)  # every smoke check starts from nothing: it tests code, not stored runs
    knobs = settings.smoke_knobs
    cifar = data["cifar10"]
    main = RealDataExperiment("cifar10", knobs, RunStore(root / "main"), kind="smoke")
    quiet = {"device": settings.device, "kind": "smoke", "progress": False}
    evaluated = EvaluationSettings(pgd_steps=2, picture_images=2)

    def train(experiment, row, evaluate=False, dataset=cifar, **overrides) -> dict:
        options = ExecutionOptions(evaluate=evaluate, **{**quiet, **overrides.pop("options", {})})
        result = experiment.train(row, dataset, options, evaluated, **overrides)
        run = result.run
        if not result.finished:
            raise RuntimeError(f"{run.name} stopped before the end of its epoch")
        facts = {
            "run": run.name,
            "status": run.status,
            "epochs": len(run.history),
            "loss": run.history[-1]["loss"] if run.history else None,
        }
        if evaluate:
            if not any(run.artifacts.glob("*.png")):
                raise RuntimeError(f"{run.name}: no PAG picture was written")
            facts["metrics"] = {k: run.metrics[k] for k in ("clean", "linf", "l2")}
        return facts

    def stored(experiment, row):
        from .training import run_name_for

        return experiment.store.run(run_name_for(experiment.config(row), "smoke"))

    def strategy(name: str) -> Callable[[], dict]:
        store = RunStore(root / f"strategy-{name}")
        return lambda: train(
            RealDataExperiment("cifar10", knobs, store, kind="smoke"), "class_mean", options={"strategy": name}
        )

    def resumed() -> dict:
        # A budget of a few microseconds stops after the first step, checkpointed; the next session resumes.
        experiment = RealDataExperiment("cifar10", knobs, RunStore(root / "resume"), kind="smoke")
        first = experiment.train("vanilla", cifar, ExecutionOptions(evaluate=False, max_minutes=1e-7, **quiet))
        if first.finished:
            raise RuntimeError("the time budget did not stop the first session")
        second = experiment.train("vanilla", cifar, ExecutionOptions(evaluate=False, **quiet))
        sessions = second.run.record["sessions"]
        if not second.finished or len(sessions) != 2 or sessions[1]["epochs"][0] != 0:
            raise RuntimeError(f"resume went wrong: sessions {sessions}")
        return {"run": second.run.name, "sessions": len(sessions)}

    def stronger() -> dict:
        from .run_evaluations import Budgets, evaluate_stored_run

        vanilla, reference = stored(main, "vanilla"), stored(main, "adversarial_l2")
        device = _device(settings)
        names = ["pgd20", "pgd100", "pag_score"]
        note = None
        if autoattack_available():
            names += ["autoattack", "checks"]
        else:
            note = "AutoAttack and the checklist skipped: pyautoattack is not installed (carry its wheel to test them)"
        lines = evaluate_stored_run(
            vanilla,
            vanilla.load_model(device=device),
            cifar.subset(None, knobs["test_subset"]),
            names,
            subset=8 if settings.dry else 64,
            device=device,
            source=(vanilla.name, vanilla.load_model(device=device)),
            reference=(reference.name, reference.load_model(device=device)),
            budgets=Budgets.for_tests(),
        )
        skipped = [line for line in lines if "skipped" in line]
        if skipped:
            raise RuntimeError(f"evaluations skipped: {skipped}")
        return {"evaluations": sorted({line["name"] for line in lines}), "note": note}

    paths: list[tuple[str, Callable[[], dict]]] = [
        ("cifar10 vanilla, PGD L-inf/L2 evaluation and PAG pictures", lambda: train(main, "vanilla", evaluate=True)),
        ("cifar10 one image", lambda: train(main, "one_image")),
        ("cifar10 class mean", lambda: train(main, "class_mean")),
        ("cifar10 nearest neighbour", lambda: train(main, "nearest_neighbor")),
        *((f"gradient strategy {name}", strategy(name)) for name in ("loop", "vmap", "replicate")),
        ("a run stopped by its time budget resumes from its checkpoint", resumed),
        ("adversarial training L-inf (RIGD teacher)", lambda: train(main, "adversarial_linf")),
        ("adversarial training L2 (RIGD teacher)", lambda: train(main, "adversarial_l2")),
        ("RIGD L-inf, precomputed teacher gradients", lambda: train(main, "rigd_linf", evaluate=True)),
        ("RIGD L2, teacher on the fly", lambda: train(main, "rigd_l2", rigd_targets="on_the_fly")),
        ("PGD-100, AutoAttack, checklist and PAG score (tests' budgets)", stronger),
    ]
    stl = data.get("stl10")
    if stl is not None:
        stl_experiment = RealDataExperiment(
            "stl10", {**knobs, "batch_size": 8 if settings.dry else 32}, RunStore(root / "stl10"), kind="smoke"
        )
        paths.append(
            (
                "stl10 class mean (96x96), evaluation and pictures",
                lambda: train(stl_experiment, "class_mean", evaluate=True, dataset=stl),
            )
        )
    return paths


def _device(settings: Settings):
    from .devices import resolve_device

    return resolve_device(settings.device)


def _synchronize(settings: Settings) -> None:
    """CUDA errors surface asynchronously; waiting here charges them to the path that caused them."""
    import torch

    device = _device(settings)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_smoke(settings: Settings, data: dict, clock: Clock) -> dict:
    results = []
    report: dict[str, Any] = {
        "ok": True,
        "paths": results,
        "device": str(_device(settings)),
        "note": "smoke runs test code paths on a few batches; their numbers are not results",
    }
    if data.get("stl10") is None:
        report["stl10"] = "not staged: its path is not checked"
    for name, check in smoke_paths(settings, data):
        start = time.perf_counter()
        try:
            facts = check()
            _synchronize(settings)
            results.append({"path": name, "ok": True, "seconds": round(time.perf_counter() - start, 2), **facts})
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the campaign stops
            results.append(
                {
                    "path": name,
                    "ok": False,
                    "seconds": round(time.perf_counter() - start, 2),
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc().splitlines()[-40:],
                }
            )
            report["ok"] = False
            report["failed"] = name
            break
        print(f"smoke ok: {name} ({results[-1]['seconds']} s)", file=sys.stderr, flush=True)
    return report


# -- 2. benchmark ------------------------------------------------------------------------------------


def benchmark_command(settings: Settings, out: Path) -> list[str]:
    script = REPO / "benchmarks" / "pag_step.py"
    if settings.dry:
        sizes = ["--width", "4", "--batch-size", "4", "--iters", "1", "--warmup", "0", "--pgd-images", "8"]
        return [sys.executable, str(script), "--device", settings.device, *sizes, "--out", str(out)]
    extras = ["--compile", "--cuda-graphs", "--batch-sizes", "128", "256", "--side-by-side", "2", "4"]
    return [
        sys.executable,
        str(script),
        "--device",
        settings.device,
        "--width",
        "64",
        "--batch-size",
        "64",
        "--out",
        str(out),
        *extras,
    ]


def run_benchmark(settings: Settings, clock: Clock) -> dict:
    out = settings.work / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("pag_step-*.json"))
    timeout = max(1.0, min(60 * settings.benchmark_minutes, clock.left() - 60 * settings.pack_minutes))
    command = benchmark_command(settings, out)
    log = settings.work / "benchmark.log"
    # The GPU machine has no installed pagcore: the script finds this checkout's through PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        with open(log, "w") as handle:
            done = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO, check=False, env=env
            )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", "command": command}
    saved = sorted(set(out.glob("pag_step-*.json")) - before)
    if done.returncode or not saved:
        tail = log.read_text().splitlines()[-30:]
        return {"ok": False, "error": f"exit code {done.returncode}", "log_tail": tail, "command": command}
    payload = json.loads(saved[-1].read_text())
    result = {
        "ok": True,
        "file": saved[-1].name,
        "device": payload["device"],
        "fastest_k10_strategy": payload["fastest_k10_strategy"],
        "goals": payload["goals"],
    }
    if payload["device"].startswith("cuda") and not settings.dry:
        # Where devices.default_strategy reads it: this checkout now, the repository once committed.
        target = REPO / "benchmarks" / "results" / saved[-1].name
        shutil.copyfile(saved[-1], target)
        result["copied_to"] = str(target.relative_to(REPO))
    return result


# -- 3. train ----------------------------------------------------------------------------------------


def seed_store(settings: Settings) -> None:
    """Copy the repository's committed records of this campaign's runs into the campaign store,
    file by file where missing, so that a run begun in an earlier window is known here (its
    checkpoint arrives separately, staged from its parts)."""
    from .runs import RunStore

    store = RunStore(settings.work / "runs")
    for run in RunStore(settings.repo_runs).runs():
        if run.params.get("scale") != "paper" or run.kind != settings.kind:
            continue
        for file in run.path.rglob("*"):
            target = store.root / run.name / file.relative_to(run.path)
            if file.is_file() and not file.name.startswith("checkpoint-") and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)


def entry_status(entry: Entry, settings: Settings) -> tuple[str, Any]:
    """("complete", where) when a complete run of the entry exists in the campaign or repository
    store; else ("missing", its run name)."""
    from .experiments import RealDataExperiment
    from .runs import RunStore
    from .training import run_name_for

    experiment = RealDataExperiment(
        entry.dataset, settings.train_knobs, RunStore(settings.work / "runs"), kind=settings.kind
    )
    name = run_name_for(experiment.config(entry.row, **entry.overrides), settings.kind)
    for store in (RunStore(settings.work / "runs"), RunStore(settings.repo_runs)):
        if store.run(name).complete:
            return "complete", name
    return "missing", name


def next_missing(settings: Settings, skip: set[str] = frozenset()) -> Entry | None:
    """The first entry of :data:`PRIORITY` with no complete run (and not in ``skip``)."""
    for entry in PRIORITY:
        if entry.label not in skip and entry_status(entry, settings)[0] == "missing":
            return entry
    return None


def train_entry(entry: Entry, settings: Settings, data: dict, clock: Clock, strategy: str) -> dict:
    """Slices of at most ``slice_minutes`` until the entry's run is trained and evaluated or the
    call's time (less the pack reserve) is up."""
    from .config import ExecutionOptions
    from .evaluation import EvaluationSettings
    from .experiments import RealDataExperiment
    from .runs import RunStore
    from .training import run_name_for

    images = data.get(entry.dataset)
    if images is None:
        return {"entry": entry.label, "outcome": "blocked", "why": f"{entry.dataset} is not staged"}
    experiment = RealDataExperiment(
        entry.dataset, settings.train_knobs, RunStore(settings.work / "runs"), kind=settings.kind
    )
    evaluation = EvaluationSettings(pgd_steps=1, picture_images=1) if settings.dry else EvaluationSettings()
    reserve = 60 * settings.pack_minutes
    # Shorter slices than this are not worth starting (dry mode's whole budget is a minute).
    shortest = 0.01 if settings.dry else 0.5
    name = run_name_for(experiment.config(entry.row, **entry.overrides), settings.kind)
    slices = []
    while True:
        left = (clock.left() - reserve) / 60
        if left < shortest:
            return {"entry": entry.label, "outcome": "unfinished", "run": name, "slices": slices}
        minutes = min(settings.slice_minutes, left)
        options = ExecutionOptions(
            device=settings.device,
            strategy=strategy,
            max_minutes=minutes,
            evaluate=False,
            kind=settings.kind,
            progress=False,
        )
        try:
            # A RIGD row trains its teacher first; the priority list puts the teachers before it.
            result = experiment.train(entry.row, images, options, evaluation, **entry.overrides)
        except FileNotFoundError as missing:  # a RIGD teacher complete elsewhere whose weights are not here
            return {"entry": entry.label, "outcome": "blocked", "why": str(missing), "slices": slices}
        slices.append({"run": result.run.name, "minutes": round(minutes, 2), "epochs_done": len(result.run.history)})
        if result.finished and result.run.name == name:
            break
    run = result.run
    if clock.left() - reserve < 60 * settings.eval_minutes and not settings.dry:
        return {
            "entry": entry.label,
            "outcome": "trained, evaluation left for the next call",
            "run": name,
            "slices": slices,
        }
    options = ExecutionOptions(device=settings.device, strategy=strategy, kind=settings.kind, progress=False)
    experiment.train(entry.row, images, options, evaluation, **entry.overrides)
    metrics = {k: v for k, v in (run.metrics or {}).items() if k in ("clean", "linf", "l2", "test_images")}
    return {"entry": entry.label, "outcome": "complete", "run": name, "metrics": metrics, "slices": slices}


def run_training(settings: Settings, data: dict, clock: Clock, strategy: str) -> list[dict]:
    """Entries in priority order while time is left; a blocked entry is reported and passed over."""
    seed_store(settings)
    outcomes: list[dict] = []
    blocked: set[str] = set()
    while clock.left() > 60 * settings.pack_minutes:
        entry = next_missing(settings, blocked)
        if entry is None:
            outcomes.append({"outcome": "every run of the priority list is complete"})
            break
        outcome = train_entry(entry, settings, data, clock, strategy)
        outcomes.append(outcome)
        print(f"train: {outcome['entry']}: {outcome['outcome']}", file=sys.stderr, flush=True)
        if outcome["outcome"] == "blocked":
            blocked.add(entry.label)
        elif outcome["outcome"] != "complete":
            break
    return outcomes


# -- 4. pack -----------------------------------------------------------------------------------------


def _keep(path: Path) -> bool:
    """Records, metrics, histories, evaluations and pictures; never checkpoints or half-written files."""
    return path.is_file() and not path.name.startswith("checkpoint-") and not path.name.endswith(".tmp")


def outgoing_checkpoints(settings: Settings) -> list[tuple[str, Path]]:
    """(run, checkpoint) to bring back: the resumable checkpoint of each unfinished run first
    (the next window needs it), then the final weights of finished ones (RIGD teachers, evaluations)."""
    from .runs import RunStore
    from .transfer import sha256_of

    store = RunStore(settings.work / "runs")
    latest, final = [], []
    for run in store.runs():
        for which, bucket in (("final", final), ("latest", latest)):
            checkpoint = run.checkpoint_path(which)
            if checkpoint.exists():
                carried = checkpoint.with_name(checkpoint.name + ".parts.json")
                # One carried in by tools/stage_data.py (its manifest beside it) is already at home.
                if not (carried.exists() and json.loads(carried.read_text())["sha256"] == sha256_of(checkpoint)):
                    bucket.append((run.name, checkpoint))
                break
    return latest + final


def run_pack(settings: Settings, state: dict, report: dict) -> dict:
    """Write ``--out``: the report, the results archive, then checkpoint parts while room is left."""
    from .transfer import PART_BYTES, RETURN_FILES, RETURN_TOTAL_LIMIT, SAFETY_BYTES, sha256_of, split_file

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    staging = settings.work / "outgoing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    parts_to_send: list[tuple[str, str, Path]] = []  # (state key, run, part file)
    manifests = []
    for run_name, checkpoint in outgoing_checkpoints(settings):
        digest, key = sha256_of(checkpoint), f"{run_name}/{checkpoint.name}"
        sent = state["sent"].get(key, {})
        if sent.get("sha256") != digest:
            sent = {"sha256": digest, "parts": []}  # a new checkpoint: earlier parts are obsolete
            state["sent"][key] = sent
        manifest = split_file(checkpoint, staging / run_name, PART_BYTES)
        manifests.append((run_name, manifest))
        for part in json.loads(manifest.read_text())["parts"]:
            if part["name"] not in sent["parts"]:
                parts_to_send.append((key, run_name, staging / run_name / part["name"]))

    archive = staging / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        runs = settings.work / "runs"
        for file in sorted(runs.rglob("*")) if runs.exists() else []:
            if _keep(file):
                tar.add(file, arcname=f"runs/{file.relative_to(runs)}")
        for run_name, manifest in manifests:
            tar.add(manifest, arcname=f"checkpoints/{run_name}/{manifest.name}")
        for name in ("state.json", "benchmark.log"):
            if (settings.work / name).exists():
                tar.add(settings.work / name, arcname=f"campaign/{name}")
        for file in sorted((settings.work / "benchmark").glob("*.json")):
            cuda = file.name.startswith("pag_step-cuda-") and not settings.dry
            tar.add(file, arcname=f"benchmarks/results/{file.name}" if cuda else f"campaign/{file.name}")
        tar.add(_write_report(staging, report), arcname=f"campaign/{REPORT}")

    written = [archive] if archive.stat().st_size <= PART_BYTES else _split_archive(archive, staging, PART_BYTES)
    files = [_write_report(out, report)]
    for file in written:
        shutil.copyfile(file, out / file.name)
        files.append(out / file.name)
    used = sum(f.stat().st_size for f in files)
    sent_now, pending = [], []
    for key, run_name, part in parts_to_send:
        name = f"{run_name}--{part.name}"
        if len(files) < RETURN_FILES and used + part.stat().st_size <= RETURN_TOTAL_LIMIT - SAFETY_BYTES:
            shutil.copyfile(part, out / name)
            files.append(out / name)
            used += part.stat().st_size
            state["sent"][key]["parts"].append(part.name)
            sent_now.append(name)
        else:
            pending.append(name)
    return {
        "files": [f.name for f in files],
        "bytes": used,
        "checkpoint_parts_sent": sent_now,
        "checkpoint_parts_pending": pending,
    }


def _split_archive(archive: Path, staging: Path, part_bytes: int) -> list[Path]:
    from .transfer import split_file

    manifest = split_file(archive, staging / "archive-parts", part_bytes)
    names = [p["name"] for p in json.loads(manifest.read_text())["parts"]]
    return [manifest, *(manifest.parent / n for n in names)]


def _write_report(folder: Path, report: dict) -> Path:
    path = folder / REPORT
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return path


def unpack_results(files: Path, repo: Path = REPO) -> dict:
    """Here, after a call: merge what ``run_pack`` wrote (``files``: the call's ``files_at``) into
    the repository: ``runs/``, ``benchmarks/results/``, the campaign report and checkpoint parts
    into ``.data/campaign-reports/`` and ``.data/checkpoints/<run>/`` (kept out of git), joining
    every checkpoint whose parts are all here."""
    from .transfer import join_parts, missing_parts, sha256_of

    files = Path(files)
    archive = files / ARCHIVE
    if not archive.exists() and (files / f"{ARCHIVE}.parts.json").exists():
        archive = join_parts(files / f"{ARCHIVE}.parts.json", repo / ".data" / ARCHIVE)
    destinations = {
        "runs": repo / "runs",
        "benchmarks": repo / "benchmarks",
        "campaign": repo / ".data" / "campaign-reports",
        "checkpoints": repo / ".data" / "checkpoints",
    }
    extracted = 0
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/")
            if not member.isfile() or top not in destinations or not rest:
                continue
            target = (destinations[top] / rest).resolve()
            if destinations[top].resolve() not in target.parents:
                raise ValueError(f"refusing to write outside {destinations[top]}: {member.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            extracted += 1
    checkpoints = destinations["checkpoints"]
    for part in files.glob("*--*.part[0-9]*"):
        run_name, part_name = part.name.split("--", 1)
        (checkpoints / run_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, checkpoints / run_name / part_name)
    joined, waiting = [], []
    for manifest in sorted(checkpoints.glob("*/*.parts.json")):
        expected = json.loads(manifest.read_text())
        for part in expected["parts"]:  # parts of an older checkpoint of the same run are obsolete
            path = manifest.parent / part["name"]
            if path.exists() and sha256_of(path) != part["sha256"]:
                path.unlink()
        target = manifest.parent / expected["file"]
        if target.exists() and target.stat().st_size == expected["size"]:
            continue
        if missing_parts(manifest):
            waiting.append(f"{manifest.parent.name}/{expected['file']}")
        else:
            join_parts(manifest, target)
            joined.append(str(target.relative_to(repo)))
    return {"files_extracted": extracted, "checkpoints_joined": joined, "checkpoints_waiting_for_parts": waiting}


# -- the call ----------------------------------------------------------------------------------------


def run_campaign(settings: Settings) -> dict:
    import torch

    from .provenance import device_description, utc_now

    clock = Clock(settings.minutes)
    settings.work.mkdir(parents=True, exist_ok=True)
    state = load_state(settings.work)
    device = _device(settings)
    call = {
        "started": utc_now(),
        "device": device_description(device),
        "torch": torch.__version__,
        "commit": settings.commit or None,
        "minutes": settings.minutes,
        "steps": list(settings.steps),
        "dry": settings.dry,
    }
    report: dict[str, Any] = {"call": call}
    if device.type != "cuda" and not settings.dry:
        report["stopped"] = "no CUDA device: the campaign is for the GPU machine (use --dry to test it on CPU)"
    else:
        data = datasets(settings) if {"smoke", "train"} & set(settings.steps) else {}
        if "smoke" in settings.steps and not state.get("smoke", {}).get("ok"):
            state["smoke"] = run_smoke(settings, data, clock)
            save_state(settings.work, state)
            report["smoke"] = state["smoke"]
        elif "smoke" in settings.steps:
            report["smoke"] = "passed in an earlier call"
        if state.get("smoke") and not state["smoke"]["ok"]:
            report["stopped"] = f"smoke check failed: {state['smoke']['failed']} (see smoke.paths)"
        elif state.get("smoke") is None and {"benchmark", "train"} & set(settings.steps):
            report["stopped"] = "the smoke check has not run: include the smoke step"
        else:
            earlier = state.get("benchmark", {})
            # A failed benchmark is tried once more, not in every call: training matters more.
            if "benchmark" in settings.steps and not earlier.get("ok") and earlier.get("attempts", 0) < 2:
                state["benchmark"] = {**run_benchmark(settings, clock), "attempts": earlier.get("attempts", 0) + 1}
                save_state(settings.work, state)
                report["benchmark"] = state["benchmark"]
            if "train" in settings.steps:
                measured = state.get("benchmark", {}).get("fastest_k10_strategy")
                report["strategy"] = measured or "auto (pagcore.devices.default_strategy)"
                report["train"] = run_training(settings, data, clock, measured or "auto")
    call["seconds"] = round(clock.elapsed(), 1)
    state["calls"].append(call)
    if "pack" in settings.steps:
        report["pack"] = run_pack(settings, state, report)
        pending = report["pack"]["checkpoint_parts_pending"]
        if pending:
            report["next"] = f"{len(pending)} checkpoint part(s) left: call again with --steps pack to bring them back"
        _write_report(settings.out, report)
    save_state(settings.work, state)
    return report


def summary(report: dict) -> dict:
    """The last stdout line: what a person or script checks first."""
    smoke = report.get("smoke")
    return {
        "ok": "stopped" not in report,
        "stopped": report.get("stopped"),
        "smoke": smoke
        if isinstance(smoke, str) or smoke is None
        else ("ok" if smoke["ok"] else f"failed: {smoke['failed']}"),
        "benchmark": (report.get("benchmark") or {}).get("fastest_k10_strategy"),
        "train": [{k: t.get(k) for k in ("entry", "outcome", "run")} for t in report.get("train", [])],
        "files": (report.get("pack") or {}).get("files"),
        "next": report.get("next"),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (the device's $OUT): at most 8 files")
    parser.add_argument(
        "--minutes", required=True, type=float, help="this call's wall-clock budget (under the 10-minute limit)"
    )
    parser.add_argument(
        "--data", default="", help="CIFAR-10 .npz (tools/stage_data.py unpack writes .data/cifar10.npz)"
    )
    parser.add_argument("--stl10", default="", help="STL-10 .npz, if staged (priority 6 and its smoke path need it)")
    parser.add_argument(
        "--work", type=Path, default=REPO / ".data" / "campaign", help="state and run store kept between calls"
    )
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in this order: {','.join(STEPS)}")
    parser.add_argument("--device", default="auto", help="cuda (auto) or cpu (dry mode)")
    parser.add_argument("--slice-minutes", type=float, default=9.0, help="longest training slice")
    parser.add_argument("--eval-minutes", type=float, default=2.0, help="minutes a run's final evaluation is given")
    parser.add_argument("--pack-minutes", type=float, default=0.5, help="minutes kept for packing")
    parser.add_argument("--benchmark-minutes", type=float, default=5.0, help="limit of the step benchmark")
    parser.add_argument(
        "--commit", default="", help="the git commit sent (the machine may have no .git to read it from)"
    )
    parser.add_argument(
        "--repo-runs",
        type=Path,
        default=REPO / "runs",
        help="the repository's run store, whose complete runs are not trained again",
    )
    parser.add_argument(
        "--dry", action="store_true", help="synthetic data, tiny widths and budgets: tests the campaign on CPU"
    )


def settings_from(args: argparse.Namespace) -> Settings:
    from .validation import ConfigError

    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise ConfigError(f"steps must be a comma-separated list of {', '.join(STEPS)}; got {args.steps!r}")
    if args.minutes <= 0:
        raise ConfigError(f"minutes must be > 0; got {args.minutes}")
    if not args.dry and not args.data and {"smoke", "train"} & set(steps):
        raise ConfigError("--data must name the staged CIFAR-10 .npz (or pass --dry)")
    if args.dry:
        # Seconds, not minutes: a dry call of a minute still trains in several slices, resumed
        # from their checkpoints, and packs.
        args.slice_minutes, args.pack_minutes = min(args.slice_minutes, 0.05), min(args.pack_minutes, 0.05)
    return Settings(
        out=args.out,
        work=args.work,
        minutes=args.minutes,
        steps=steps,
        device=args.device,
        data={"cifar10": args.data, "stl10": args.stl10},
        dry=args.dry,
        slice_minutes=args.slice_minutes,
        eval_minutes=args.eval_minutes,
        pack_minutes=args.pack_minutes,
        benchmark_minutes=args.benchmark_minutes,
        commit=args.commit,
        repo_runs=args.repo_runs,
    )


def handle(args: argparse.Namespace) -> dict:
    """``python -m pagcore campaign``: the summary is the last stdout line; the full report is in --out."""
    return summary(run_campaign(settings_from(args)))


def add_campaign_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "campaign",
        help="the GPU campaign: smoke check, step benchmark, paper-scale runs, pack",
        description=DESCRIPTION,
    )
    add_arguments(p)
    p.set_defaults(handler=handle)


def main(argv: list[str] | None = None) -> int:
    """``python -m pagcore.campaign``: without the sweep's imports; exit code 1 when it stopped early."""
    from .validation import ConfigError

    parser = argparse.ArgumentParser(prog="python -m pagcore.campaign", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = handle(args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
