"""The reproduction-status page's data: paper values beside real runs only."""

import json

from pagcore import paper
from pagcore.runs import RunStore
from pagcore.status import reproduction_status
from pagcore.training import run_identity, run_name_for
from pagcore.experiments import RealDataExperiment


def store_run(store, config, kind, metrics):
    run = store.create(run_name_for(config, kind), run_identity(config, kind))
    run.write_json("record.json", {"kind": kind, "status": "complete", "wall_seconds": 60.0, "sessions": [
        {"device": "cuda: NVIDIA H100 80GB HBM3", "finished": "2026-12-01T10:00:00+00:00", "git": "abc"}]})
    run.write_json("metrics.json", metrics)
    return run


def test_status_lists_every_paper_number_and_fills_only_real_runs(tmp_path):
    store = RunStore(tmp_path / "runs")
    experiment = RealDataExperiment("cifar10", store=store)
    store_run(store, experiment.config("vanilla", epochs=20), "real", {"clean": 0.9, "linf": 0.0, "l2": 0.01})
    store_run(store, experiment.config("class_mean"), "smoke", {"clean": 0.5, "linf": 0.5, "l2": 0.5})
    toy = tmp_path / "toy.json"
    toy.write_text(json.dumps({"kind": "real", "summary": {"vanilla": {"clean": 1.0, "pgd": 0.1}, "pag": {"clean": 1.0, "pgd": 0.9},
                                                            "seeds": [0, 1]},
                               "parameters": {"epochs": 100}, "device": "cpu: X (2 logical cores)", "finished": "2026-11-21T00:00"}))
    rows = reproduction_status(store, toy)
    expected = 4 + 2 * 6 * 3 + 3 + 4 * 3  # toy, Tables 1 and 2, Table 4, Figure 5
    assert len(rows) == expected
    filled = [r for r in rows if r.ours is not None]
    assert {r.experiment for r in filled} == {"toy (Section 5.1)", "Table 1 (cifar10)"}
    vanilla_clean = next(r for r in filled if r.setting == "Vanilla" and r.metric == "clean")
    assert vanilla_clean.paper == paper.TABLES["cifar10"]["vanilla"]["clean"]
    assert abs(vanilla_clean.gap - (0.9 - 0.9361)) < 1e-12
    assert vanilla_clean.schedule == "20 epochs" and "H100" in vanilla_clean.device and vanilla_clean.date == "2026-12-01"
    # The smoke run of class mean does not count.
    assert all(r.ours is None for r in rows if r.setting == "Class Mean")
    toy_pgd = next(r for r in rows if r.experiment.startswith("toy") and r.setting == "pag" and r.metric == "pgd")
    assert toy_pgd.ours == 0.9 and toy_pgd.schedule == "100 epochs, 2 seeds"


def test_status_without_any_run_says_not_run(tmp_path):
    rows = reproduction_status(RunStore(tmp_path), tmp_path / "absent.json")
    assert rows and all(r.ours is None and r.gap is None for r in rows)
