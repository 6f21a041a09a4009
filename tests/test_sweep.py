"""python -m pagcore sweep: grids, the local executor end to end, and the Slurm submission it writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pagcore import cli
from pagcore.base.validation import ConfigError
from pagcore.orchestrate.sweep import (
    Resources,
    cli_arguments,
    expand_grid,
    job_table,
    load_summary,
    parameter_options,
    read_grid_file,
    run_sweep,
)
from pagcore.store.runs import RunStore

ROOT = Path(__file__).resolve().parent.parent
# Smoke settings for `train` on random images: seconds per run on a CPU, never results. Two steps
# per epoch and two epochs, so that a run can be stopped part-way.
TINY_TRAIN = {
    "dataset": "cifar10",
    "synthetic": [64, 20],
    "epochs": 2,
    "batch_size": 32,
    "width": 4,
    "pool_size": 8,
    "pgd_steps": 1,
    "picture_images": 1,
    "device": "cpu",
    "no_progress": True,
}


def test_grid_expands_to_every_combination_last_axis_fastest():
    points = expand_grid({"source": ["one_image", "class_mean"], "seed": [0, 1], "epochs": [3]})
    assert points == [
        {"source": "one_image", "seed": 0, "epochs": 3},
        {"source": "one_image", "seed": 1, "epochs": 3},
        {"source": "class_mean", "seed": 0, "epochs": 3},
        {"source": "class_mean", "seed": 1, "epochs": 3},
    ]
    with pytest.raises(ConfigError):
        expand_grid({"seed": []})


def test_p_options_read_values_as_yaml():
    grid = parameter_options([["lam", "0.1", "1"], ["synthetic", "[64, 20]"], ["no_augment", "true"], ["lam", "2"]])
    assert grid == {"lam": [0.1, 1, 2], "synthetic": [[64, 20]], "no_augment": [True]}


def test_grid_file_scalars_are_fixed_and_lists_are_axes(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("experiment: train\nparameters:\n  dataset: stl10\n  seed: [0, 1, 2]\n  synthetic: [[64, 20]]\n")
    assert read_grid_file(path) == ("train", {"dataset": ["stl10"], "seed": [0, 1, 2], "synthetic": [[64, 20]]})
    path.write_text("experiments: train\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        read_grid_file(path)


def test_parameters_become_cli_options():
    arguments = cli_arguments(
        "train",
        {
            "lam": 0.4,
            "no_augment": True,
            "retrain": False,
            "teacher": None,
            "synthetic": [64, 20],
            "source": "class_mean",
        },
    )
    assert arguments == ["train", "--lam", "0.4", "--no-augment", "--synthetic", "64", "20", "--source", "class_mean"]


def train_cli(*arguments: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "pagcore", "train", *arguments], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_local_sweep_skips_finished_points_and_resumes_an_interrupted_one(tmp_path):
    runs = tmp_path / "runs"
    tiny = {k: [v] for k, v in TINY_TRAIN.items()}
    grid = {"source": ["one_image", "class_mean"], "seed": [1], "runs": [str(runs)], **tiny}
    # A pre-empted job leaves its run interrupted with a checkpoint: stop one point's run after one step.
    interrupted_point = dict(TINY_TRAIN, source="class_mean", seed=1, runs=str(runs))
    first = train_cli(*cli_arguments("train", interrupted_point)[1:], "--max-minutes", "0.000001")
    assert first["status"] == "interrupted" and not first["finished"]
    assert RunStore(runs).find(first["run"]).load_checkpoint()["step"] == 1, "stopped after the first step"

    sweep_dir = tmp_path / "sweep"
    resources = Resources(cluster="local", array_parallelism=2, time_minutes=10)
    points = run_sweep("train", grid, sweep_dir, resources, log=lambda message: None)
    print(job_table(points))
    assert [p.state for p in points] == ["DONE"] * 2, job_table(points)
    assert len({p.job_id for p in points}) == 2, "one job per point"

    store = RunStore(runs)
    records = {(r.params["source"], r.params["seed"]): r.record for r in store.runs()}
    assert len(records) == 2 and all(r["status"] == "complete" for r in records.values())
    resumed = records[("class_mean", 1)]["sessions"]
    assert len(resumed) == 2, "the interrupted run was continued, not started again or skipped"
    assert resumed[0]["epochs"] == [0, 0] and resumed[1]["epochs"] == [0, 2]
    assert len(records[("one_image", 1)]["sessions"]) == 1

    summary = load_summary(sweep_dir)
    assert len(summary["points"]) == 2 and {p["state"] for p in summary["points"]} == {"DONE"}
    assert summary["points"][1]["result"]["output"]["run"] == first["run"]

    submitted = sorted((sweep_dir / "jobs").glob("*_submitted.pkl"))
    again = run_sweep("train", grid, sweep_dir, resources, log=lambda message: None)
    assert [p.state for p in again] == ["SKIPPED (finished)"] * 2
    assert sorted((sweep_dir / "jobs").glob("*_submitted.pkl")) == submitted, "no job was submitted again"
    assert [len(r.record["sessions"]) for r in store.runs()] == [
        len(records[(r.params["source"], r.params["seed"])]["sessions"]) for r in store.runs()
    ]

    # Extending the grid submits only the new points.
    wider = dict(grid, seed=[1, 2])
    extended = run_sweep("train", wider, sweep_dir, resources, log=lambda message: None)
    assert [p.state for p in extended].count("DONE") == 2
    assert [p.state for p in extended].count("SKIPPED (finished)") == 2


@pytest.mark.slow
def test_notebook_sweep_runs_papermill_per_point(tmp_path):
    import nbformat

    notebook = tmp_path / "tiny.ipynb"
    parameters = nbformat.v4.new_code_cell("lam = 0.0\nseed = 0")
    parameters.metadata["tags"] = ["parameters"]
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[parameters, nbformat.v4.new_code_cell("print(lam * 10 + seed)")], metadata=kernel
        ),
        notebook,
    )
    points = run_sweep(
        str(notebook),
        {"lam": [0.5], "seed": [1, 2]},
        tmp_path / "sweep",
        Resources(cluster="local", array_parallelism=2),
        log=lambda message: None,
    )
    assert [p.state for p in points] == ["DONE", "DONE"], job_table(points)
    for point, expected in zip(points, ("6.0", "7.0")):
        executed = nbformat.read(point.result["output"]["notebook"], as_version=4)
        assert executed.cells[-1].outputs[0]["text"].strip() == expected


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch and srun stand-ins on PATH: sbatch keeps each submission script and answers as Slurm's does."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    kept.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nfor last; do :; done\n"
        f'n=$(ls "{kept}" | wc -l)\ncp "$last" "{kept}/$n.sh"\necho "Submitted batch job $((4242 + n))"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that it exists
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


def test_slurm_sweep_submits_one_job_array_with_the_requested_resources(tmp_path, fake_slurm, capsys):
    sweep_dir = tmp_path / "sweep"
    code = cli.main(
        [
            "sweep",
            "train",
            "-p",
            "source",
            "one_image",
            "class_mean",
            "-p",
            "seed",
            "0",
            "1",
            "-p",
            "dataset",
            "cifar10",
            "-p",
            "data",
            "/cluster/data/cifar10.npz",
            "--out",
            str(sweep_dir),
            "--cluster",
            "slurm",
            "--partition",
            "gpu-a100",
            "--gpus",
            "1",
            "--cpus",
            "8",
            "--mem-gb",
            "32",
            "--time",
            "600",
            "--array-parallelism",
            "2",
            "--job-name",
            "pag-table1",
        ]
    )
    assert code == 0
    scripts = sorted(fake_slurm.iterdir())
    assert len(scripts) == 1, "the whole grid goes in one sbatch call"
    options = {
        line.split("=")[0][len("#SBATCH ") :]: line.split("=", 1)[1]
        for line in scripts[0].read_text().splitlines()
        if line.startswith("#SBATCH")
    }
    assert options["--array"] == "0-3%2"
    assert options["--partition"] == "gpu-a100"
    assert options["--gpus-per-node"] == "1"
    assert options["--cpus-per-task"] == "8"
    assert options["--mem"] == "32GB"
    assert options["--time"] == "600"
    assert options["--job-name"] == "pag-table1"
    assert options["--signal"].startswith("USR2@"), "pre-emption warning that makes submitit requeue the job"
    assert "srun" in scripts[0].read_text() and "submitit.core._submit" in scripts[0].read_text()

    output = capsys.readouterr().out
    assert "4242_0" in output and "4242_3" in output, output
    assert json.loads(output.strip().splitlines()[-1])["points"] == 4
    assert sorted(json.loads((sweep_dir / "jobs.json").read_text()).values()) == [f"4242_{i}" for i in range(4)]

    # Submitting again while the jobs may still be queued must not submit them twice.
    again = run_sweep(
        "train",
        {
            "source": ["one_image", "class_mean"],
            "seed": [0, 1],
            "dataset": ["cifar10"],
            "data": ["/cluster/data/cifar10.npz"],
        },
        sweep_dir,
        Resources(cluster="slurm", partition="gpu-a100"),
        log=lambda message: None,
    )
    assert {p.state for p in again} == {"SKIPPED (queued)"}
    assert len(list(fake_slurm.iterdir())) == 1


def test_slurm_sweep_needs_a_partition(tmp_path):
    with pytest.raises(ConfigError, match="partition"):
        run_sweep("train", {"seed": [0]}, tmp_path, Resources(cluster="slurm"))
    with pytest.raises(ConfigError, match="experiment"):
        run_sweep("nonexistent.ipynb", {"seed": [0]}, tmp_path, Resources())
