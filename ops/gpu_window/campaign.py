"""The GPU campaign: one command that spends a lent GPU's minutes in a fixed order.

    python -m ops.gpu_window.campaign --data .data/cifar10.npz --out $OUT --minutes 8.5      # on the GPU machine
    python -m ops.gpu_window.campaign --dry --out /tmp/out --minutes 1 --device cpu  # the same code, on CPU

Each call works within ``--minutes`` of wall clock and does, in order, what is not done yet:

1. **smoke**: every code path on CUDA, on a few batches (a 512-image subset, one epoch): each
   target source, every gradient strategy, a resumed run, the two adversarially trained
   teachers, RIGD from each (precomputed and on the fly), PGD L-inf/L2 and the PAG pictures,
   PGD-100, AutoAttack, the gradient-masking checklist and the PAG score with the tests'
   budgets (skipped, with a note, when ``pyautoattack`` is not installed), and STL-10's 96x96
   model. The first failure stops the campaign, with its traceback in the report;
2. **benchmark**: ``benchmarks/pag_step.py`` at ResNet-18 width 64, batch 64; its fastest k = 10
   gradient strategy trains this campaign's runs, and its JSON (copied to
   ``benchmarks/results/``, then committed) makes that strategy :func:`pagcore.train.devices.default_strategy`'s;
3. **train**: the first paper-scale run of :data:`PRIORITY` that is not complete, in resumable
   slices of at most ``--slice-minutes`` (9): a run unfinished when the call's time is up
   continues from its checkpoint in the next call. Evaluation runs only when the minutes left
   allow it (``--eval-minutes``); otherwise the next call evaluates. A run that is blocked
   (no STL-10 data, a teacher's weights not staged) is reported and skipped. With ``cpu_scale``
   among ``--steps``, this step ends ``--cpu-scale-share`` of the call early (below);
4. **cpu_scale**: the missing CPU-scale runs of :data:`CPU_PRIORITY`, ``--cpu-scale-workers``
   (4) processes side by side on the GPU (a width-8 model leaves it mostly idle), each
   training one run of the CPU preset, unchanged, into the campaign's run store (same run
   names as a CPU machine makes; each session's record names its device). Whenever a worker
   ends, the first entry that can start takes its place: a RIGD run waits for its teacher to
   be complete; an entry is blocked (reported, never trained) while its preset is provisional,
   its dataset is not staged, or the repository holds it unfinished from another machine.
   Workers stop, resumably, at the call's deadline. Whether it pays is *measured* once, right
   after the benchmark (before ``train``, so the first window with the minutes for it measures):
   one run alone, then ``--cpu-scale-workers`` side by side, each for
   ``--cpu-scale-measure-minutes`` (1), on the CPU scale's class-mean row (kind ``pilot``, in a
   scratch store); the images/s of each, their ratio (``speedup``) and the seconds per epoch of
   one run (to set beside a CPU machine's history) go into ``state.json`` and every report.
   Time: ``train`` leaves this step ``--cpu-scale-share`` (0.0) of the call's minutes, and
   whatever it does not use itself (every paper-scale run complete or blocked). So by default
   the GPU fills only idle time with CPU-scale runs, after the paper-scale priority of the moment;
5. **evaluate**: the stored evaluations (PGD-20/100, AutoAttack and the checklist where
   ``pyautoattack`` is installed, the PAG score) on every complete CPU-scale run, on the test
   subsets :func:`pagcore.orchestrate.evaluations.evaluation_plan` chooses, with the time the steps
   before it leave; stored in chunks, so an evaluation cut off by the call's end goes on in the
   next. A call with ``--steps evaluate,pack`` spends itself on this alone;
6. **pack**: every record, metric, history, evaluation and picture into ``--out``, at most 8
   files of under 16 MiB: ``campaign-report.json``, ``campaign-results.tar.gz`` (split into
   parts if large; it also holds the CPU-scale checkpoints not yet brought back, ~1 MB each,
   whose final weights are then committed and archived in git history, see ``.gitignore``) and
   as many checkpoint parts as the remaining room allows (the resumable checkpoint of an
   unfinished paper-scale run, the final weights of a finished one); the report lists the parts
   still to bring back (``--steps pack`` brings them, without training).

State between calls lives in ``--work`` (``.data/campaign/``, ignored by git, so it stays on a
warm machine between calls): ``state.json`` and the campaign's run store ``runs/``, seeded at
each call from the repository's committed records (with the resumable checkpoints of unfinished
CPU-scale runs committed beside them; finished runs' final weights live in git history, which this
machine lacks, so a CPU-scale run archived there is not evaluated or used as a teacher here).
``--dry`` runs the same code on synthetic data with tiny widths and budgets (kind ``smoke``,
never results), ``cpu_scale`` included (two workers, one epoch); ``make test`` runs it.

Imports only torch, numpy, matplotlib, tqdm and the standard library (no Jupyter, papermill,
PyYAML or submitit: the GPU machine has none of them), so run it there as
``python -m ops.gpu_window.campaign``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ops.gpu_window import transfer
from pagcore.base.deadline import Deadline
from pagcore.base.validation import ConfigError
from pagcore.config import ExecutionConfig
from pagcore.data import load_dataset
from pagcore.evaluate.final import EvaluationConfig
from pagcore.evaluate.stored import TABLE_EVALUATIONS, BudgetConfig, companion_run
from pagcore.orchestrate.book_runs import SCORE_DENOISERS, BookRun, book_runs
from pagcore.orchestrate.evaluations import evaluate_smoothing, evaluate_table
from pagcore.orchestrate.queue import RunQueue, Status
from pagcore.orchestrate.selftest import SYNTHETIC_IMAGES, autoattack_available, run_selftest, synthetic_data
from pagcore.orchestrate.workers import (
    DataSource,
    launch_worker,
    threads_per_worker,
    throughput,
    wait_for_workers,
    worker_outcome,
)
from pagcore.store.provenance import device_description, utc_now, write_json_atomic
from pagcore.store.runs import RunStore
from pagcore.train.denoiser import denoiser_store
from pagcore.train.devices import resolve_device

REPO = Path(__file__).resolve().parents[2]
STEPS = ("smoke", "benchmark", "train", "cpu_scale", "evaluate", "pack")
REPORT = "campaign-report.json"
DESCRIPTION = (
    "On the GPU machine, within --minutes: a smoke check of every CUDA code path, the step benchmark, "
    "the next paper-scale runs of the priority list in resumable slices, missing CPU-scale runs side by side, "
    "the stored evaluations of complete CPU-scale runs, and the pack into --out (see ops/gpu_window/README.md)."
)
ARCHIVE = "campaign-results.tar.gz"


PRIORITY: tuple[BookRun, ...] = book_runs("paper")
"""What the ``train`` step makes at the paper scale, in the book's order."""
CPU_PRIORITY: tuple[BookRun, ...] = book_runs("cpu")
"""What the ``cpu_scale`` step makes, side by side, in the book's order."""

MEASURED_ENTRY = BookRun("table", "cifar10", "class_mean", scale="cpu")
"""What the side-by-side measurement trains: a PAG row at the CPU scale, k target gradients a step."""

# Dry mode shrinks each scale's model and schedule and keeps its code path: two epochs at the paper
# scale (a run crosses slices), one at the CPU scale (each of its runs is a process of its own).
DRY_KNOBS: dict[str, dict[str, Any]] = {
    "paper": {"width": 4, "epochs": 2, "batch_size": 16},
    "cpu": {"width": 4, "epochs": 1, "batch_size": 16},
}


@dataclass
class CampaignConfig:
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
    cpu_scale_workers: int = 4
    cpu_scale_share: float = 0.0
    cpu_scale_measure_minutes: float = 1.0

    @property
    def kind(self) -> str:
        return "smoke" if self.dry else "real"

    def knobs(self, scale: str) -> dict[str, Any]:
        """The training knobs of ``scale``: its preset as it is (dry mode shrinks it, see :data:`DRY_KNOBS`)."""
        return {"scale": scale, **(DRY_KNOBS[scale] if self.dry else {})}

    @property
    def evaluation_knobs(self) -> dict[str, Any]:
        """The final evaluation's settings: the paper's, or one PGD step and one picture in dry mode."""
        return {"pgd_steps": 1, "picture_images": 1} if self.dry else {}

    @property
    def shortest_slice_minutes(self) -> float:
        """Shorter training slices than this are not worth starting (dry mode's whole budget is a minute)."""
        return 0.01 if self.dry else 0.5

    @property
    def worker_start_seconds(self) -> float:
        """Allowed for a worker process to import torch, load its data and reach the device."""
        return 8.0 if self.dry else 30.0

    @property
    def worker_stop_seconds(self) -> float:
        """Allowed for a worker past its deadline to checkpoint and exit
        (see :func:`pagcore.orchestrate.workers.wait_for_workers`)."""
        return 3.0 if self.dry else 20.0


# -- state -------------------------------------------------------------------------------------------


def load_state(work: Path) -> dict:
    path = work / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"calls": [], "sent": {}}


def save_state(work: Path, state: dict) -> None:
    write_json_atomic(work / "state.json", state)


def datasets(settings: CampaignConfig) -> dict:
    """The staged datasets (synthetic in dry mode); a dataset not staged is None."""

    if settings.dry:
        return synthetic_data()
    return {name: load_dataset(name, path) if path else None for name, path in settings.data.items()}


def staged(settings: CampaignConfig, dataset: str) -> bool:
    return settings.dry or bool(settings.data.get(dataset))


def _subprocess_env() -> dict[str, str]:
    # The GPU machine has no installed pagcore: a child process finds this checkout's through PYTHONPATH.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# -- 1. smoke ----------------------------------------------------------------------------------------


def _device(settings: CampaignConfig):
    return resolve_device(settings.device)


def run_smoke(settings: CampaignConfig, data: dict) -> dict:
    """:func:`pagcore.orchestrate.selftest.run_selftest` on the staged data (the paper's width on CUDA)."""
    return run_selftest(settings.work / "smoke", data, settings.device)


# -- 2. benchmark ------------------------------------------------------------------------------------


def benchmark_command(settings: CampaignConfig, out: Path) -> list[str]:
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


def run_benchmark(settings: CampaignConfig, until: Deadline) -> dict:
    out = settings.work / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("pag_step-*.json"))
    timeout = max(1.0, min(60 * settings.benchmark_minutes, until.seconds_left() - 60 * settings.pack_minutes))
    command = benchmark_command(settings, out)
    log = settings.work / "benchmark.log"
    try:
        with open(log, "w") as handle:
            done = subprocess.run(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=REPO,
                check=False,
                env=_subprocess_env(),
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


def travels_with_repository(run) -> bool:
    """CPU-scale checkpoints are small: a resumable one is committed with its run and seeded with the
    records, and either kind comes back in the results archive, not as parts (see ``.gitignore``)."""
    return run.params.get("scale") == "cpu"


def begun_elsewhere(run, settings: CampaignConfig) -> bool:
    """An unfinished CPU-scale run of the repository with no session on this kind of device: a CPU
    machine is (or was) training it, and two machines must not write one run."""
    if not travels_with_repository(run) or run.status == "new" or run.complete:
        return False
    device_type = _device(settings).type
    return not any(s.get("device", "").startswith(device_type) for s in run.record.get("sessions", []))


def seed_store(settings: CampaignConfig) -> None:
    """Copy the repository's committed records of this campaign's runs into the campaign store,
    file by file where missing, so that a run begun in an earlier window is known here (a
    paper-scale checkpoint arrives separately, staged from its parts; a CPU-scale resumable one is
    committed with its run and copied here unless the store already has one of that run), and the
    book's complete denoisers (:data:`~pagcore.orchestrate.book_runs.SCORE_DENOISERS`) with their weights."""

    store = RunStore(settings.work / "runs")
    for run in RunStore(settings.repo_runs).runs():
        if (
            run.params.get("scale") not in ("paper", "cpu")
            or run.kind != settings.kind
            or begun_elsewhere(run, settings)
        ):
            continue
        with_checkpoints = travels_with_repository(run) and not any(store.run(run.name).path.glob("checkpoint-*.pt"))
        _copy_missing(run.path, store.root / run.name, with_checkpoints)
    # The book's denoisers, weights and all: the score-based rows compute their targets with them.
    for name in SCORE_DENOISERS.values():
        denoiser = denoiser_store(settings.repo_runs).run(name)
        if denoiser.complete:
            _copy_missing(denoiser.path, denoiser_store(store.root).root / name, with_checkpoints=True)


def _copy_missing(source: Path, target: Path, with_checkpoints: bool) -> None:
    """The files of run directory ``source`` that ``target`` lacks (checkpoints only ``with_checkpoints``)."""
    for file in source.rglob("*"):
        copy = target / file.relative_to(source)
        checkpoint = file.name.startswith("checkpoint-")
        if not file.is_file() or file.name.endswith(".tmp") or (checkpoint and not with_checkpoints):
            continue
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, copy)


class CampaignQueue(RunQueue):
    """The book's runs in the campaign's store, at each entry's scale (shrunk in dry mode). A run
    complete in the repository counts as complete; one the repository holds unfinished from
    another machine is blocked (two machines must not write one run)."""

    def __init__(self, entries: tuple[BookRun, ...], settings: CampaignConfig):
        super().__init__(entries, RunStore(settings.work / "runs"), kind=settings.kind)
        self.settings = settings

    def entry_knobs(self, entry: BookRun) -> dict[str, Any]:
        return self.settings.knobs(entry.scale)

    def status(self, entry: BookRun) -> Status:
        status = super().status(entry)
        at_home = RunStore(self.settings.repo_runs).run(status.run)
        if status.state != "complete" and at_home.complete:
            return Status("complete", status.run)
        if status.state == "missing" and begun_elsewhere(at_home, self.settings):
            return Status("blocked", status.run, f"the repository holds it {at_home.status} from another machine")
        return status


def entry_status(entry: BookRun, settings: CampaignConfig) -> Status:
    return CampaignQueue((entry,), settings).status(entry)


def next_missing(settings: CampaignConfig, entries: tuple[BookRun, ...] = PRIORITY) -> BookRun | None:
    """The first of ``entries`` that can start: no complete run here or in the repository, not blocked."""
    return CampaignQueue(entries, settings).next_missing()


def run_training(settings: CampaignConfig, data: dict, until: Deadline, strategy: str) -> list[dict]:
    """:data:`PRIORITY` in order, in slices of ``slice_minutes``, until the call's time less the
    pack's reserve is up; a blocked entry is reported and passed over. The final evaluation waits
    for the next call when fewer than ``eval_minutes`` are left."""
    seed_store(settings)
    queue = CampaignQueue(PRIORITY, settings)
    options = ExecutionConfig(device=settings.device, strategy=strategy, kind=settings.kind, progress=False)
    outcomes = queue.make(
        data.get,
        until.earlier(60 * settings.pack_minutes),
        options,
        EvaluationConfig(**settings.evaluation_knobs),
        slice_minutes=settings.slice_minutes,
        evaluation_seconds=0.0 if settings.dry else 60 * settings.eval_minutes,
        shortest_slice_seconds=60 * settings.shortest_slice_minutes,
    )
    for outcome in outcomes:
        print(f"train: {outcome['entry']}: {outcome['outcome']}", file=sys.stderr, flush=True)
    if queue.next_missing({o["entry"] for o in outcomes if o["outcome"] == "blocked"}) is None:
        outcomes.append({"outcome": "every run of the priority list is complete or blocked"})
    return outcomes


# -- 4. CPU-scale runs side by side -------------------------------------------------------------------


def sources(settings: CampaignConfig) -> dict[str, DataSource | None]:
    """Where a worker reads each dataset: its staged .npz (synthetic images in dry mode); None when not staged."""
    return {
        name: DataSource(settings.data.get(name, ""), sizes if settings.dry else None)
        if staged(settings, name)
        else None
        for name, sizes in SYNTHETIC_IMAGES.items()
    }


def worker_options(settings: CampaignConfig) -> ExecutionConfig:
    """How the workers train (the device's default strategy), with a line to stderr when one ends."""
    return ExecutionConfig(device=settings.device, kind=settings.kind, progress=True)


def measurement_seconds(settings: CampaignConfig) -> float:
    """The measurement's worst case: each phase starts its workers, trains, and stops them."""
    phases = len({1, settings.cpu_scale_workers})
    return phases * (
        settings.worker_start_seconds + 60 * settings.cpu_scale_measure_minutes + settings.worker_stop_seconds
    )


def measure_side_by_side(settings: CampaignConfig) -> dict:
    """Images/s of :data:`MEASURED_ENTRY` trained alone, then ``cpu_scale_workers`` times side by
    side, each run for ``cpu_scale_measure_minutes`` in a scratch store (kind ``pilot``: a
    provisional preset may be measured, and the runs are never results)."""

    root = settings.work / "cpu-scale-measurement"
    shutil.rmtree(root, ignore_errors=True)
    kind = "smoke" if settings.dry else "pilot"
    phases = [
        measure_phase(settings, root / f"{count}-side-by-side", count, kind)
        for count in sorted({1, settings.cpu_scale_workers})
    ]
    shutil.rmtree(root, ignore_errors=True)
    alone, side_by_side = phases[0]["images_per_second"], phases[-1]["images_per_second"]
    return {
        "ok": all(run.get("images") for phase in phases for run in phase["runs"]),
        "entry": MEASURED_ENTRY.label,
        "kind": kind,
        "device": device_description(_device(settings)),
        "date": utc_now(),
        "minutes_per_run": settings.cpu_scale_measure_minutes,
        "phases": phases,
        # Images/s of the workers side by side over that of one run alone: above 1, side by side pays.
        "speedup": round(side_by_side / alone, 2) if alone and side_by_side else None,
    }


def measure_phase(settings: CampaignConfig, folder: Path, count: int, kind: str) -> dict:
    """:data:`MEASURED_ENTRY` trained by ``count`` workers side by side, each into a store of its own
    under ``folder``, with the threads each of ``cpu_scale_workers`` gets: their images/s together."""
    deadline = time.time() + settings.worker_start_seconds + 60 * settings.cpu_scale_measure_minutes
    threads = threads_per_worker(settings.cpu_scale_workers)
    workers = []
    for index in range(count):
        scratch = RunQueue(
            (MEASURED_ENTRY,), RunStore(folder / str(index) / "runs"), kind=kind, knobs=settings.knobs("cpu")
        )
        spec = scratch.worker_spec(
            MEASURED_ENTRY,
            sources(settings)[MEASURED_ENTRY.dataset],
            deadline,
            worker_options(settings),
            EvaluationConfig(**settings.evaluation_knobs),
            minutes=settings.cpu_scale_measure_minutes,
            evaluate=False,
        )
        workers.append(launch_worker(spec, folder / str(index), f"{MEASURED_ENTRY.label} #{index}", threads))
    running = list(workers)
    while running:
        for worker in wait_for_workers(running, deadline, settings.worker_stop_seconds):
            running.remove(worker)
    runs = [worker_outcome(worker) for worker in workers]
    together = throughput(runs)
    train_images = next((run["train_images"] for run in runs if "train_images" in run), 0)
    kept = ("outcome", "images", "train_seconds", "images_per_second", "log_tail")
    return {
        "workers": count,
        "images_per_second": together,
        # One run's epoch at this rate: to set beside the epoch seconds of a CPU machine's history.
        "epoch_seconds_per_run": round(train_images * count / together, 1) if together else None,
        "runs": [{k: run[k] for k in kept if k in run} for run in runs],
    }


def measure_once(settings: CampaignConfig, state: dict, until: Deadline) -> str:
    """The side-by-side measurement, unless an earlier call made it or too little time is left
    (a later call measures); what happened, for the report. The campaign calls it right after the
    benchmark, before the paper-scale runs take the call's time, so that the first window measures."""
    if "cpu_scale_measurement" in state:
        return "measured in an earlier call"
    left = until.seconds_left() - 60 * settings.pack_minutes
    if left < measurement_seconds(settings):
        return f"not measured: {left:.0f} s left, it needs up to {measurement_seconds(settings):.0f} s"
    state["cpu_scale_measurement"] = measure_side_by_side(settings)
    save_state(settings.work, state)
    return "measured in this call"


def run_cpu_scale(settings: CampaignConfig, state: dict, until: Deadline, measured: str) -> dict:
    """Missing CPU-scale runs of :data:`CPU_PRIORITY`, ``cpu_scale_workers`` side by side until the
    call's time less the pack's reserve is up (:meth:`RunQueue.make_side_by_side`), reported with the
    measurement."""

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what this process cached for the paper-scale runs is the workers' now
    seed_store(settings)
    folder = settings.work / "cpu-scale-workers"
    shutil.rmtree(folder, ignore_errors=True)  # this call's specs and logs only
    made = CampaignQueue(CPU_PRIORITY, settings).make_side_by_side(
        sources(settings),
        until.earlier(60 * settings.pack_minutes),
        worker_options(settings),
        EvaluationConfig(**settings.evaluation_knobs),
        workers=settings.cpu_scale_workers,
        folder=folder,
        evaluation_seconds=0.0 if settings.dry else 60 * settings.eval_minutes,
        shortest_slice_seconds=60 * settings.shortest_slice_minutes,
        stop_seconds=settings.worker_stop_seconds,
    )
    return {
        "workers": settings.cpu_scale_workers,
        "measured": measured,
        "measurement": state.get("cpu_scale_measurement"),
        **made,
    }


# -- 5. evaluate -------------------------------------------------------------------------------------


def evaluation_names() -> list[str]:
    """The evaluations the step runs: all of them where ``pyautoattack`` is installed (carry it)."""

    return [n for n in TABLE_EVALUATIONS if autoattack_available() or n not in ("autoattack", "checks")]


def run_evaluate(settings: CampaignConfig, data: dict, until: Deadline) -> dict:
    """The stronger evaluations of every complete CPU-scale run in the campaign's store, in
    :func:`pagcore.orchestrate.evaluations.evaluation_plan`'s order (the larger subset for vanilla, the
    best PAG row and RIGD, then the smaller one for the others), until the call's time is up. They are
    stored beside each run in chunks as they finish, and come back in the results archive: a
    run whose evaluations are not all done goes on, from its stored chunks, in the next call."""

    seed_store(settings)
    store = RunStore(settings.work / "runs")
    names = evaluation_names()
    done: list[dict] = []
    for dataset, images in data.items():
        if images is not None:
            result = evaluate_table(
                store,
                dataset,
                settings.knobs("cpu"),
                settings.kind,
                lambda images=images: images,
                names,
                device=_device(settings),
                budgets=BudgetConfig.for_tests() if settings.dry else BudgetConfig(),
                deadline=until.earlier(60 * settings.pack_minutes),
            )
            done += result["runs"]
    if data.get("cifar10") is not None:
        done += _evaluate_smoothing(settings, store, data["cifar10"], until)
    finished = [r for r in done if "evaluations" in r and all(line.get("path") for line in r["evaluations"])]
    return {
        "attacks": names,
        "note": None
        if "autoattack" in names
        else "AutoAttack and the checklist skipped: pyautoattack is not installed",
        "runs": done,
        "complete": f"{len(finished)}/{len(done)}",
    }


def _evaluate_smoothing(settings: CampaignConfig, store: RunStore, images, until: Deadline) -> list[dict]:
    """The randomized-smoothing chapter's evaluations of every complete CPU-scale base classifier
    trained with Gaussian noise, against the adversarially trained reference of the store."""
    device = _device(settings)
    runs = store.select(kind=settings.kind, dataset="cifar10", scale="cpu", objective="gaussian_noise")
    deadline, done = until.earlier(60 * settings.pack_minutes), []
    for run in sorted((run for run in runs if run.complete), key=lambda run: run.name):
        if deadline.passed():
            done.append({"run": run.name, "skipped": "out of time"})
            continue
        reference = companion_run(store, run, None, "adversarial", device)
        budgets = BudgetConfig.for_tests() if settings.dry else BudgetConfig()
        lines = evaluate_smoothing(run, images, reference, device=device, budgets=budgets, deadline=deadline)
        done.append({"run": run.name, "smoothing": True, "evaluations": lines})
    return done


# -- 6. pack -----------------------------------------------------------------------------------------


def _keep(path: Path) -> bool:
    """Records, metrics, histories, evaluations and pictures; never checkpoints or half-written files."""
    return path.is_file() and not path.name.startswith("checkpoint-") and not path.name.endswith(".tmp")


def _at_home(file: Path, settings: CampaignConfig) -> bool:
    """The campaign store's ``file`` is the same as the repository's: it was seeded, and is not sent
    back (a copy could undo what was written there since)."""

    home = settings.repo_runs / file.relative_to(settings.work / "runs")
    return home.is_file() and filecmp.cmp(home, file, shallow=False)


def archived_checkpoints(settings: CampaignConfig, state: dict) -> list[tuple[str, Path, str]]:
    """(state key, checkpoint, digest) of the CPU-scale runs whose latest checkpoint (the final one
    once finished) has not come back yet: it goes into the results archive, to ``runs/``."""

    chosen = []
    for run in RunStore(settings.work / "runs").runs():
        if not travels_with_repository(run):
            continue
        for which in ("final", "latest"):
            checkpoint = run.checkpoint_path(which)
            if checkpoint.exists():
                digest, key = transfer.sha256_of(checkpoint), f"{run.name}/{checkpoint.name}"
                if state["sent"].get(key, {}).get("sha256") != digest and not _at_home(checkpoint, settings):
                    chosen.append((key, checkpoint, digest))
                break
    return chosen


def outgoing_checkpoints(settings: CampaignConfig) -> list[tuple[str, Path]]:
    """(run, checkpoint) to bring back in parts: the resumable checkpoint of each unfinished paper-scale run first
    (the next window needs it), then the final weights of finished ones (RIGD teachers, evaluations)."""

    store = RunStore(settings.work / "runs")
    latest, final = [], []
    for run in store.runs():
        if travels_with_repository(run):
            continue  # it comes back in the archive (archived_checkpoints)
        for which, bucket in (("final", final), ("latest", latest)):
            checkpoint = run.checkpoint_path(which)
            if checkpoint.exists():
                carried = checkpoint.with_name(checkpoint.name + transfer.MANIFEST_SUFFIX)
                # One carried in by ops/gpu_window/stage_data.py (its manifest beside it) is already at home.
                digest = transfer.sha256_of(checkpoint)
                if not (carried.exists() and json.loads(carried.read_text())["sha256"] == digest):
                    bucket.append((run.name, checkpoint))
                break
    return latest + final


def run_pack(settings: CampaignConfig, state: dict, report: dict) -> dict:
    """Write ``--out``: the report, the results archive, then checkpoint parts while room is left."""

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    staging = settings.work / "outgoing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)

    parts_to_send: list[tuple[str, str, Path]] = []  # (state key, run, part file)
    manifests = []
    for run_name, checkpoint in outgoing_checkpoints(settings):
        digest, key = transfer.sha256_of(checkpoint), f"{run_name}/{checkpoint.name}"
        sent = state["sent"].get(key, {})
        if sent.get("sha256") != digest:
            sent = {"sha256": digest, "parts": []}  # a new checkpoint: earlier parts are obsolete
            state["sent"][key] = sent
        manifest = transfer.split_file(checkpoint, staging / run_name, transfer.PART_BYTES)
        manifests.append((run_name, manifest))
        for part in json.loads(manifest.read_text())["parts"]:
            if part["name"] not in sent["parts"]:
                parts_to_send.append((key, run_name, staging / run_name / part["name"]))

    archive = staging / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        runs = settings.work / "runs"
        for file in sorted(runs.rglob("*")) if runs.exists() else []:
            if _keep(file) and not _at_home(file, settings):
                tar.add(file, arcname=f"runs/{file.relative_to(runs)}")
        archived = archived_checkpoints(settings, state)
        for key, checkpoint, digest in archived:
            tar.add(checkpoint, arcname=f"runs/{checkpoint.relative_to(runs)}")
            state["sent"][key] = {"sha256": digest, "in_archive": True}
        for run_name, manifest in manifests:
            tar.add(manifest, arcname=f"checkpoints/{run_name}/{manifest.name}")
        for name in ("state.json", "benchmark.log"):
            if (settings.work / name).exists():
                tar.add(settings.work / name, arcname=f"campaign/{name}")
        for file in sorted((settings.work / "benchmark").glob("*.json")):
            cuda = file.name.startswith("pag_step-cuda-") and not settings.dry
            tar.add(file, arcname=f"benchmarks/results/{file.name}" if cuda else f"campaign/{file.name}")
        tar.add(_write_report(staging, report), arcname=f"campaign/{REPORT}")

    part_bytes = transfer.PART_BYTES
    written = [archive] if archive.stat().st_size <= part_bytes else _split_archive(archive, staging, part_bytes)
    files = [_write_report(out, report)]
    for file in written:
        shutil.copyfile(file, out / file.name)
        files.append(out / file.name)
    used = sum(f.stat().st_size for f in files)
    sent_now, pending = [], []
    for key, run_name, part in parts_to_send:
        name = f"{run_name}--{part.name}"
        room = transfer.RETURN_TOTAL_LIMIT - transfer.SAFETY_BYTES
        if len(files) < transfer.RETURN_FILES and used + part.stat().st_size <= room:
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
        "checkpoints_in_archive": [key for key, _, _ in archived],
    }


def _split_archive(archive: Path, staging: Path, part_bytes: int) -> list[Path]:
    manifest = transfer.split_file(archive, staging / "archive-parts", part_bytes)
    names = [p["name"] for p in json.loads(manifest.read_text())["parts"]]
    return [manifest, *(manifest.parent / n for n in names)]


def _write_report(folder: Path, report: dict) -> Path:
    path = folder / REPORT
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return path


def unpack_results(files: Path, repo: Path = REPO) -> dict:
    """Here, after a call: merge what ``run_pack`` wrote (``files``: the call's ``files_at``) into
    the repository: ``runs/`` (CPU-scale checkpoints included), ``benchmarks/results/``, the
    campaign report and checkpoint parts into ``.data/campaign-reports/`` and
    ``.data/checkpoints/<run>/`` (kept out of git), joining every checkpoint whose parts are all here."""

    files = Path(files)
    archive = files / ARCHIVE
    if not archive.exists() and (files / f"{ARCHIVE}{transfer.MANIFEST_SUFFIX}").exists():
        archive = transfer.join_parts(files / f"{ARCHIVE}{transfer.MANIFEST_SUFFIX}", repo / ".data" / ARCHIVE)
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
            if top == "runs" and target.name == "checkpoint-final.pt":
                # A finished run no longer needs its resumable checkpoint (as Trainer.finish decides).
                target.with_name("checkpoint-latest.pt").unlink(missing_ok=True)
    checkpoints = destinations["checkpoints"]
    for part in files.glob("*--*.part[0-9]*"):
        run_name, part_name = part.name.split("--", 1)
        (checkpoints / run_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(part, checkpoints / run_name / part_name)
    joined, waiting = [], []
    for manifest in sorted(checkpoints.glob(f"*/*{transfer.MANIFEST_SUFFIX}")):
        expected = json.loads(manifest.read_text())
        for part in expected["parts"]:  # parts of an older checkpoint of the same run are obsolete
            path = manifest.parent / part["name"]
            if path.exists() and transfer.sha256_of(path) != part["sha256"]:
                path.unlink()
        target = manifest.parent / expected["file"]
        if target.exists() and target.stat().st_size == expected["size"]:
            continue
        if transfer.missing_parts(manifest):
            waiting.append(f"{manifest.parent.name}/{expected['file']}")
        else:
            transfer.join_parts(manifest, target)
            joined.append(str(target.relative_to(repo)))
    return {"files_extracted": extracted, "checkpoints_joined": joined, "checkpoints_waiting_for_parts": waiting}


# -- the call ----------------------------------------------------------------------------------------


def run_campaign(settings: CampaignConfig) -> dict:
    until = Deadline.after(settings.minutes)
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
        data = datasets(settings) if {"smoke", "train", "evaluate"} & set(settings.steps) else {}
        if "smoke" in settings.steps and not state.get("smoke", {}).get("ok"):
            state["smoke"] = run_smoke(settings, data)
            save_state(settings.work, state)
            report["smoke"] = state["smoke"]
        elif "smoke" in settings.steps:
            report["smoke"] = "passed in an earlier call"
        if state.get("smoke") and not state["smoke"]["ok"]:
            report["stopped"] = f"smoke check failed: {state['smoke']['failed']} (see smoke.paths)"
        elif state.get("smoke") is None and {"benchmark", "train", "cpu_scale", "evaluate"} & set(settings.steps):
            report["stopped"] = "the smoke check has not run: include the smoke step"
        else:
            earlier = state.get("benchmark", {})
            # A failed benchmark is tried once more, not in every call: training matters more.
            if "benchmark" in settings.steps and not earlier.get("ok") and earlier.get("attempts", 0) < 2:
                state["benchmark"] = {**run_benchmark(settings, until), "attempts": earlier.get("attempts", 0) + 1}
                save_state(settings.work, state)
                report["benchmark"] = state["benchmark"]
            if "cpu_scale" in settings.steps:
                measured = measure_once(settings, state, until)
            if "train" in settings.steps:
                strategy = state.get("benchmark", {}).get("fastest_k10_strategy")
                report["strategy"] = strategy or "auto (pagcore.train.devices.default_strategy)"
                # The train step leaves cpu_scale its share of the call (and whatever it does not use).
                kept = 60 * settings.minutes * settings.cpu_scale_share if "cpu_scale" in settings.steps else 0.0
                report["train"] = run_training(settings, data, until.earlier(kept), strategy or "auto")
            if "cpu_scale" in settings.steps:
                report["cpu_scale"] = run_cpu_scale(settings, state, until, measured)
            if "evaluate" in settings.steps:
                report["evaluate"] = run_evaluate(settings, data, until)
    call["seconds"] = round(until.elapsed(), 1)
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
        "cpu_scale": _cpu_scale_summary(report.get("cpu_scale")),
        "evaluate": (report.get("evaluate") or {}).get("complete"),
        "files": (report.get("pack") or {}).get("files"),
        "next": report.get("next"),
    }


def _cpu_scale_summary(cpu_scale: dict | None) -> dict | None:
    if cpu_scale is None:
        return None
    measurement = cpu_scale.get("measurement") or {}
    return {
        "speedup": measurement.get("speedup"),
        "images_per_second": cpu_scale["images_per_second"],
        "complete": f"{cpu_scale['complete']}/{cpu_scale['of']}",
        "runs": [{k: r.get(k) for k in ("entry", "outcome", "run")} for r in cpu_scale["runs"]],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (the device's $OUT): at most 8 files")
    parser.add_argument(
        "--minutes", required=True, type=float, help="this call's wall-until budget (under the 10-minute limit)"
    )
    parser.add_argument(
        "--data", default="", help="CIFAR-10 .npz (ops/gpu_window/stage_data.py unpack writes .data/cifar10.npz)"
    )
    parser.add_argument(
        "--stl10", default="", help="STL-10 .npz, if staged (its Table 2 entries and its smoke path need it)"
    )
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
        "--cpu-scale-workers", type=int, default=4, help="CPU-scale runs trained side by side (step cpu_scale)"
    )
    parser.add_argument(
        "--cpu-scale-share",
        type=float,
        default=0.0,
        help="fraction of --minutes the train step leaves to cpu_scale (which also gets what train leaves unused)",
    )
    parser.add_argument(
        "--cpu-scale-measure-minutes",
        type=float,
        default=1.0,
        help="minutes each run of the one-off side-by-side measurement trains",
    )
    parser.add_argument(
        "--dry", action="store_true", help="synthetic data, tiny widths and budgets: tests the campaign on CPU"
    )


def settings_from(args: argparse.Namespace) -> CampaignConfig:
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise ConfigError(f"steps must be a comma-separated list of {', '.join(STEPS)}; got {args.steps!r}")
    if args.minutes <= 0:
        raise ConfigError(f"minutes must be > 0; got {args.minutes}")
    if args.cpu_scale_workers < 1:
        raise ConfigError(f"cpu-scale-workers must be >= 1; got {args.cpu_scale_workers}")
    if not 0 <= args.cpu_scale_share < 1:
        raise ConfigError(f"cpu-scale-share must be in [0, 1); got {args.cpu_scale_share}")
    if args.cpu_scale_measure_minutes <= 0:
        raise ConfigError(f"cpu-scale-measure-minutes must be > 0; got {args.cpu_scale_measure_minutes}")
    if not args.dry and not args.data and {"smoke", "train", "cpu_scale"} & set(steps):
        raise ConfigError("--data must name the staged CIFAR-10 .npz (or pass --dry)")
    if args.dry:
        # Seconds, not minutes: a dry call of a minute still trains in several slices, resumed
        # from their checkpoints, measures side by side and packs. Two workers: CPUs have few cores.
        args.slice_minutes, args.pack_minutes = min(args.slice_minutes, 0.05), min(args.pack_minutes, 0.05)
        args.cpu_scale_measure_minutes = min(args.cpu_scale_measure_minutes, 0.01)
        args.cpu_scale_workers = min(args.cpu_scale_workers, 2)
    return CampaignConfig(
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
        cpu_scale_workers=args.cpu_scale_workers,
        cpu_scale_share=args.cpu_scale_share,
        cpu_scale_measure_minutes=args.cpu_scale_measure_minutes,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m ops.gpu_window.campaign``: the summary is the last stdout line, the full report is in
    --out; exit code 1 when it stopped early."""

    parser = argparse.ArgumentParser(prog="python -m ops.gpu_window.campaign", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = summary(run_campaign(settings_from(args)))
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
