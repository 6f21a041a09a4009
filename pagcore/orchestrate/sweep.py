"""Sweeps: one experiment over a grid of parameters, one scheduler job per grid point.

    python -m pagcore sweep train -p source one_image class_mean -p seed 0 1 -p dataset cifar10 ...
    python -m pagcore sweep notebooks/real_data.ipynb --grid grid.yaml --cluster slurm --partition gpu

The experiment is either a notebook (each job executes it with papermill) or a subcommand of
this CLI, ``train`` or ``toy`` (each job runs ``python -m pagcore <subcommand>``, which needs
no Jupyter). Jobs are submitted with submitit: as one Slurm job array on a cluster, or as
local processes where there is no Slurm.

Every grid point has a directory ``<sweep>/points/<key>/``, keyed by a hash of its parameters,
holding the point's parameters, its executed notebook or CLI output, and ``result.json`` once
the point has finished. Submitting again skips finished points. A point whose job was
pre-empted or stopped early resumes: ``train`` (directly or inside a notebook with
``train_missing``) continues a run of the same parameters from its latest checkpoint, and on
Slurm submitit itself requeues a job that receives the pre-emption signal.

After submission (and, by default for local jobs, after they end) the sweep prints a table of
job states and writes ``<sweep>/summary.json``, which the book can read with :func:`load_summary`.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagcore.base.validation import ConfigError
from pagcore.store.provenance import utc_now, write_json_atomic
from pagcore.store.runs import parameter_hash

CLI_EXPERIMENTS = ("train", "toy")
CLUSTERS = ("local", "slurm")
# Slurm states in which a job still holds, or waits for, a place in the queue. UNKNOWN (sacct does
# not know the job yet, or cannot be reached) counts too: submitting a point twice would let two
# jobs train the same run at once, which is worse than waiting for the next resubmission.
QUEUED_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "UNKNOWN",
}


# -- the grid ------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A command-line value as YAML: ``0.4`` -> 0.4, ``true`` -> True, ``[64, 20]`` -> [64, 20], ``a`` -> "a"."""
    import yaml  # a sweep's dependency only: the rest of the package runs where PyYAML is not installed

    return yaml.safe_load(text)


def parameter_options(options: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
    """``-p NAME VALUE [VALUE ...]`` options as ``{NAME: [values]}``; a repeated NAME adds values."""
    grid: dict[str, list[Any]] = {}
    for name, *values in options:
        if not values:
            raise ConfigError(f"-p {name}: give at least one value")
        grid.setdefault(name, []).extend(parse_value(v) for v in values)
    return grid


def read_grid_file(path: str | Path) -> tuple[str | None, dict[str, list[Any]]]:
    """A YAML grid: ``{experiment: ..., parameters: {name: value or [values]}}``.

    A scalar is a fixed parameter; a list is an axis of the grid. A parameter whose value is
    itself a list (e.g. ``synthetic: [64, 20]``) must be written as a list of one list.
    """
    import yaml

    content = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(content) - {"experiment", "parameters"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; expected 'experiment' and 'parameters'")
    parameters = content.get("parameters") or {}
    return content.get("experiment"), {k: v if isinstance(v, list) else [v] for k, v in parameters.items()}


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last parameter varying fastest."""
    for name, values in grid.items():
        if not values:
            raise ConfigError(f"parameter {name} has no values")
    names = list(grid)
    return [dict(zip(names, combination)) for combination in itertools.product(*(grid[n] for n in names))]


def cli_arguments(command: str, parameters: Mapping[str, Any]) -> list[str]:
    """``python -m pagcore <command>`` arguments for ``parameters``.

    ``lam=0.4`` -> ``--lam 0.4``; ``no_augment=True`` -> ``--no-augment`` (``False`` and ``None``
    leave the option out); ``synthetic=[64, 20]`` -> ``--synthetic 64 20``.
    """
    arguments = [command]
    for name, value in parameters.items():
        option = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            arguments.append(option)
        elif isinstance(value, (list, tuple)):
            arguments += [option, *map(str, value)]
        else:
            arguments += [option, str(value)]
    return arguments


# -- one grid point ------------------------------------------------------------------------------


def point_key(experiment: str, parameters: Mapping[str, Any]) -> str:
    return parameter_hash({"experiment": experiment, "parameters": dict(parameters)})


def point_directory(sweep_dir: Path, experiment: str, parameters: Mapping[str, Any]) -> Path:
    return Path(sweep_dir) / "points" / point_key(experiment, parameters)


def point_result(directory: Path) -> dict[str, Any] | None:
    """The finished point's result, or None while it has not finished."""
    file = Path(directory) / "result.json"
    return json.loads(file.read_text()) if file.exists() else None


@dataclass
class PointJob:
    """What one scheduler job runs: the experiment at one grid point.

    submitit pickles this object into the job. On Slurm, a job that receives the pre-emption or
    time-limit signal calls :meth:`checkpoint`, which requeues the same point; running it again
    resumes, because training continues a run of the same parameters from its checkpoint.
    """

    experiment: str
    parameters: dict[str, Any]
    directory: str
    working_directory: str = field(default_factory=os.getcwd)

    def __call__(self) -> dict[str, Any]:
        directory = Path(self.directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / "parameters.json", {"experiment": self.experiment, "parameters": self.parameters})
        started = time.perf_counter()
        if self.experiment in CLI_EXPERIMENTS:
            output = self.run_cli()
            finished = output.get("finished", True)  # train reports False when it stopped early
        else:
            output = self.run_notebook()
            finished = True
        result = {
            "output": output,
            "finished": finished,
            "seconds": round(time.perf_counter() - started, 3),
            "ended": utc_now(),
        }
        # Only a finished point gets result.json: that file is what makes a resubmission skip it.
        write_json_atomic(directory / ("result.json" if finished else "partial.json"), result)
        return result

    def run_cli(self) -> dict[str, Any]:
        # A child process, so that the pre-emption signal (SIGTERM) reaches training's own handler,
        # which saves a checkpoint before the process ends; the last stdout line is its JSON result.
        arguments = [sys.executable, "-m", "pagcore", *cli_arguments(self.experiment, self.parameters)]
        completed = subprocess.run(
            arguments, cwd=self.working_directory, stdout=subprocess.PIPE, text=True, check=False
        )
        (Path(self.directory) / "stdout.txt").write_text(completed.stdout)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(arguments)} exited with {completed.returncode}; stderr is in the job's log")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def run_notebook(self) -> dict[str, Any]:
        try:
            import papermill
        except ImportError as error:  # a cluster image without Jupyter: the CLI experiments need none
            raise RuntimeError("papermill is not installed here; sweep the `train` or `toy` CLI instead") from error
        output = Path(self.directory) / Path(self.experiment).name
        papermill.execute_notebook(
            self.experiment,
            str(output),
            parameters=self.parameters,
            cwd=self.working_directory,
            kernel_name="python3",
            progress_bar=False,
        )
        return {"notebook": str(output)}

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# -- the scheduler -------------------------------------------------------------------------------


@dataclass
class Resources:
    """What each job asks the scheduler for. Slurm-only fields are ignored by local jobs."""

    cluster: str = "local"
    partition: str | None = None
    gpus: int = 0
    cpus: int = 1
    memory_gb: float | None = None
    time_minutes: int = 60
    array_parallelism: int = 4
    name: str = "pag-sweep"

    def validate(self) -> Resources:
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"cluster must be one of {CLUSTERS}, not {self.cluster!r}")
        if self.cluster == "slurm" and not self.partition:
            raise ConfigError("a Slurm sweep needs --partition")
        for name in ("cpus", "time_minutes", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.gpus < 0:
            raise ConfigError("gpus must be 0 or more")
        return self


def make_executor(folder: Path, resources: Resources):
    """A submitit executor for ``resources``: sbatch job arrays on Slurm, child processes locally."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=resources.cluster)
    parameters: dict[str, Any] = {
        "name": resources.name,
        "timeout_min": resources.time_minutes,
        "cpus_per_task": resources.cpus,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if resources.gpus:
        parameters["gpus_per_node"] = resources.gpus
    if resources.memory_gb:
        parameters["mem_gb"] = resources.memory_gb
    if resources.cluster == "slurm":
        parameters["slurm_partition"] = resources.partition
        parameters["slurm_array_parallelism"] = resources.array_parallelism
    executor.update_parameters(**parameters)
    return executor


# -- the sweep -----------------------------------------------------------------------------------


@dataclass
class PointState:
    parameters: dict[str, Any]
    directory: Path
    state: str
    job_id: str = ""
    result: dict[str, Any] | None = None


def resolve_experiment(experiment: str) -> str:
    if experiment in CLI_EXPERIMENTS:
        return experiment
    path = Path(experiment)
    if path.suffix != ".ipynb" or not path.exists():
        raise ConfigError(f"experiment must be one of {CLI_EXPERIMENTS} or an existing .ipynb file, not {experiment!r}")
    return str(path.resolve())


def job_ids_file(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "jobs.json"


def queued_slurm_jobs(sweep_dir: Path) -> dict[str, str]:
    """Point keys whose Slurm job, submitted earlier, is still pending or running (key -> job id)."""
    file = job_ids_file(sweep_dir)
    if not file.exists():
        return {}
    import submitit

    queued = {}
    for key, job_id in json.loads(file.read_text()).items():
        try:
            state = submitit.SlurmJob(folder=Path(sweep_dir) / "jobs", job_id=job_id).state
        except Exception:  # no sacct here, or the job is gone from its records: treat as not queued
            continue
        if state.split()[0] in QUEUED_STATES:
            queued[key] = job_id
    return queued


def run_sweep(
    experiment: str,
    grid: Mapping[str, Sequence[Any]],
    sweep_dir: str | Path,
    resources: Resources,
    *,
    wait: bool | None = None,
    log=None,
) -> list[PointState]:
    """Submit every unfinished point of ``grid``, then report the state of all of them.

    ``wait`` (default: for local jobs only) blocks until the submitted jobs end. Finished points
    are skipped; on Slurm so are points whose job from an earlier submission is still queued.
    """
    resources.validate()
    experiment = resolve_experiment(experiment)
    sweep_dir = Path(sweep_dir).resolve()
    wait = resources.cluster == "local" if wait is None else wait
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))

    points = [PointState(p, point_directory(sweep_dir, experiment, p), "") for p in expand_grid(grid)]
    queued = queued_slurm_jobs(sweep_dir) if resources.cluster == "slurm" else {}
    to_submit = []
    for point in points:
        point.result = point_result(point.directory)
        if point.result is not None:
            point.state = "SKIPPED (finished)"
        elif point.directory.name in queued:
            point.state, point.job_id = "SKIPPED (queued)", queued[point.directory.name]
        else:
            to_submit.append(point)
    log(f"sweep: {len(points)} points, {len(points) - len(to_submit)} skipped, {len(to_submit)} to submit")

    executor = make_executor(sweep_dir / "jobs", resources) if to_submit else None
    jobs = []
    # The local executor starts every job it is given at once; batches keep to the parallelism asked for.
    batch = len(to_submit) if resources.cluster == "slurm" else resources.array_parallelism
    for start in range(0, len(to_submit), max(batch, 1)):
        chunk = to_submit[start : start + batch]
        with executor.batch():  # one sbatch --array submission on Slurm
            chunk_jobs = [executor.submit(PointJob(experiment, p.parameters, str(p.directory))) for p in chunk]
        for point, job in zip(chunk, chunk_jobs):
            point.job_id, point.state = str(job.job_id), "SUBMITTED"
        jobs += chunk_jobs
        if wait and resources.cluster == "local":
            wait_for(chunk, chunk_jobs)
    if resources.cluster == "slurm" and jobs:
        recorded = json.loads(job_ids_file(sweep_dir).read_text()) if job_ids_file(sweep_dir).exists() else {}
        recorded.update({p.directory.name: p.job_id for p in to_submit})
        write_json_atomic(job_ids_file(sweep_dir), recorded)
        if wait:
            wait_for(to_submit, jobs)
        else:
            for point, job in zip(to_submit, jobs):
                point.state = scheduler_state(job)
    write_summary(sweep_dir, experiment, grid, resources, points)
    return points


def scheduler_state(job) -> str:
    try:
        return job.state
    except Exception:  # sacct unreachable: the job was submitted, its state is not known
        return "SUBMITTED"


def wait_for(points: Sequence[PointState], jobs: Sequence[Any]) -> None:
    """Block until ``jobs`` end; then each point's state says how its job ended."""
    for point, job in zip(points, jobs):
        try:
            output = job.result()
        except Exception as error:  # the job raised, or died: its log in jobs/ has the details
            point.state = f"FAILED ({type(error).__name__})"
            continue
        point.result = point_result(point.directory) or output
        point.state = "DONE" if output.get("finished") else "INCOMPLETE (resubmit to resume)"


# -- report --------------------------------------------------------------------------------------


def varied(points: Sequence[PointState]) -> list[str]:
    """The parameters that differ between points: the columns worth showing."""
    names = list(dict.fromkeys(n for p in points for n in p.parameters))
    return [n for n in names if len({json.dumps(p.parameters.get(n), default=str) for p in points}) > 1]


def result_note(result: dict[str, Any] | None) -> str:
    """A few words on a point's outcome: the run and its clean accuracy, or the notebook written."""
    if not result:
        return ""
    output = result.get("output", result)
    if "run" in output:
        clean = (output.get("metrics") or {}).get("clean")
        return output["run"] + (f" (clean {100 * clean:.1f}%)" if clean is not None else "")
    if "notebook" in output:
        return Path(output["notebook"]).name
    return ", ".join(f"{k}={v}" for k, v in list(output.items())[:3])


def job_table(points: Sequence[PointState]) -> str:
    """A plain-text table: one row per grid point with its varied parameters, job and state."""
    columns = (varied(points) or list(points[0].parameters)[:1]) if points else []
    header = ["#", *columns, "job", "state", "result"]
    rows = [
        [
            str(i),
            *(json.dumps(p.parameters.get(c), default=str).strip('"') for c in columns),
            p.job_id or "-",
            p.state,
            result_note(p.result),
        ]
        for i, p in enumerate(points)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_summary(
    sweep_dir: Path,
    experiment: str,
    grid: Mapping[str, Sequence[Any]],
    resources: Resources,
    points: Iterable[PointState],
) -> Path:
    summary = {
        "experiment": experiment,
        "grid": {k: list(v) for k, v in grid.items()},
        "cluster": resources.cluster,
        "written": utc_now(),
        "points": [
            {
                "key": p.directory.name,
                "parameters": p.parameters,
                "job": p.job_id,
                "state": p.state,
                "directory": str(p.directory),
                "result": p.result,
            }
            for p in points
        ],
    }
    path = Path(sweep_dir) / "summary.json"
    write_json_atomic(path, summary)
    return path


def load_summary(sweep_dir: str | Path) -> dict[str, Any]:
    """The summary a sweep wrote: its grid and, per point, parameters, job, state and result."""
    return json.loads((Path(sweep_dir) / "summary.json").read_text())


# -- command line --------------------------------------------------------------------------------


def add_sweep_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run an experiment over a parameter grid: a Slurm job array, or local processes",
        description="One job per grid point, through submitit. Finished points are skipped; interrupted ones resume.",
    )
    p.add_argument(
        "experiment",
        nargs="?",
        help=f"a notebook (.ipynb, run with papermill) or {' / '.join(CLI_EXPERIMENTS)}"
        " (the CLI, no Jupyter needed); may come from --grid instead",
    )
    p.add_argument("--grid", help="YAML file: {experiment: ..., parameters: {name: value or [values]}}")
    p.add_argument(
        "-p",
        "--param",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter and its values (YAML: 0.4, true, [64, 20]); several values make a grid axis",
    )
    p.add_argument("--out", help="sweep directory (default: sweeps/<experiment name> in the current directory)")
    p.add_argument(
        "--cluster", default="local", help="local (submitit's local executor) or slurm (default: %(default)s)"
    )
    p.add_argument("--partition", help="Slurm partition (required with --cluster slurm)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per job (default: %(default)s)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs per job (default: %(default)s)")
    p.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB (default: the cluster's)")
    p.add_argument("--time", type=int, default=60, help="time limit per job in minutes (default: %(default)s)")
    p.add_argument(
        "--array-parallelism",
        type=int,
        default=4,
        help="jobs running at once: Slurm's --array=...%%N, or local processes (default: %(default)s)",
    )
    p.add_argument("--job-name", default="pag-sweep")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait", dest="wait", action="store_true", default=None, help="wait for the jobs (local default)"
    )
    wait.add_argument("--no-wait", dest="wait", action="store_false", help="return after submitting (Slurm default)")
    p.set_defaults(handler=run_sweep_command)


def run_sweep_command(args) -> dict[str, Any]:
    experiment, grid = read_grid_file(args.grid) if args.grid else (None, {})
    grid.update(parameter_options(args.param))
    experiment = args.experiment or experiment
    if not experiment:
        raise ConfigError("name the experiment: a notebook or one of " + ", ".join(CLI_EXPERIMENTS))
    out = Path(args.out) if args.out else Path("sweeps") / Path(experiment).stem
    resources = Resources(
        cluster=args.cluster,
        partition=args.partition,
        gpus=args.gpus,
        cpus=args.cpus,
        memory_gb=args.mem_gb,
        time_minutes=args.time,
        array_parallelism=args.array_parallelism,
        name=args.job_name,
    )
    points = run_sweep(experiment, grid, out, resources, wait=args.wait)
    print(job_table(points), flush=True)
    states: dict[str, int] = {}
    for point in points:
        states[point.state] = states.get(point.state, 0) + 1
    return {"summary": str(out.resolve() / "summary.json"), "points": len(points), "states": states}
