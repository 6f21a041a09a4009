"""The reproduction-status page's data: paper values beside real runs only."""

import json

from pagcore.book.status import counts, reproduction_status
from pagcore.orchestrate.experiments import RealDataExperiment
from pagcore.paper import reported
from pagcore.store.runs import RunStore
from pagcore.train.trainer import run_identity, run_name_for


def store_run(store, config, kind, metrics):
    run = store.create(run_name_for(config, kind), run_identity(config, kind))
    run.write_json(
        "record.json",
        {
            "kind": kind,
            "status": "complete",
            "wall_seconds": 60.0,
            "sessions": [
                {"device": "cuda: NVIDIA H100 80GB HBM3", "finished": "2026-12-01T10:00:00+00:00", "git": "abc"}
            ],
        },
    )
    run.write_json("metrics.json", metrics)
    return run


def test_status_lists_every_paper_number_and_fills_only_real_runs(tmp_path):
    store = RunStore(tmp_path / "runs")
    experiment = RealDataExperiment("cifar10", store=store)
    store_run(store, experiment.config("vanilla", epochs=20), "real", {"clean": 0.9, "linf": 0.0, "l2": 0.01})
    store_run(store, experiment.config("class_mean"), "smoke", {"clean": 0.5, "linf": 0.5, "l2": 0.5})
    cpu = RealDataExperiment("cifar10", {"scale": "cpu"}, store=store)
    store_run(store, cpu.config("class_mean"), "real", {"clean": 0.6, "linf": 0.1, "l2": 0.3})
    toy = tmp_path / "toy.json"
    toy.write_text(
        json.dumps(
            {
                "kind": "real",
                "summary": {"vanilla": {"clean": 1.0, "pgd": 0.1}, "pag": {"clean": 1.0, "pgd": 0.9}, "seeds": [0, 1]},
                "parameters": {"epochs": 100},
                "device": "cpu: X (2 logical cores)",
                "finished": "2026-11-21T00:00",
            }
        )
    )
    rows = reproduction_status(store, toy)
    per_scale = 2 * 6 * 3 + 3 + 4 * 3  # Tables 1 and 2, Table 4, Figure 5
    assert len(rows) == 4 + 2 * per_scale  # the toy at the paper's setting, the rest at both scales
    filled = [r for r in rows if r.ours is not None]
    # The CPU-scale class mean (lambda 0.4, Table 3's) answers Table 1 and Figure 5's lambda = 0.4 point.
    assert {(r.experiment, r.scale) for r in filled} == {
        ("toy (Section 5.1)", "paper"),
        ("Table 1 (cifar10)", "paper"),
        ("Table 1 (cifar10)", "cpu"),
        ("Figure 5 (λ)", "cpu"),
    }
    # The CPU-scale class mean fills a CPU-scale cell, never a paper-scale one.
    assert {(r.setting, r.scale) for r in filled if r.experiment.startswith("Table")} == {
        ("Vanilla", "paper"),
        ("Class Mean", "cpu"),
    }
    assert counts(rows) == {
        "paper": {"cells": 4 + per_scale, "measured": 4 + 3},
        "cpu": {"cells": per_scale, "measured": 6},
    }
    vanilla_clean = next(r for r in filled if r.setting == "Vanilla" and r.metric == "clean")
    assert vanilla_clean.scale == "paper"
    assert vanilla_clean.paper == reported.TABLES["cifar10"]["vanilla"]["clean"]
    assert abs(vanilla_clean.gap - (0.9 - 0.9361)) < 1e-12
    assert (
        vanilla_clean.schedule == "20 epochs, width 64"
        and "H100" in vanilla_clean.device
        and vanilla_clean.date == "2026-12-01"
    )
    # The smoke run of class mean does not count.
    assert all(r.ours is None for r in rows if r.setting == "Class Mean" and r.scale == "paper")
    toy_pgd = next(r for r in rows if r.experiment.startswith("toy") and r.setting == "pag" and r.metric == "pgd")
    assert toy_pgd.ours == 0.9 and toy_pgd.schedule == "100 epochs, 2 seeds"


def test_status_without_any_run_says_not_run(tmp_path):
    rows = reproduction_status(RunStore(tmp_path), tmp_path / "absent.json")
    assert rows and all(r.ours is None and r.gap is None for r in rows)


def test_status_data_needs_no_jupyter():
    """The status page's data (and the report helpers it uses) import without IPython."""
    import subprocess
    import sys

    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'IPython', 'ipywidgets', 'myst_nb'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pagcore.book.status, pagcore.book.text, pagcore.book.tables, pagcore.book.verdicts\n"
        "print(pagcore.book.text.percent(0.5))\n"
    )
    out = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "50.0%"
