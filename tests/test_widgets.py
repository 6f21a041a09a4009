"""The explorers: set widget values from Python and check that what they show changes."""

import torch

from pagcore.book.widgets import StoredRunsExplorer, ToyExplorer
from pagcore.store.runs import RunStore
from pagcore.toy.problem import ToyConfig

SMALL = ToyConfig(epochs=15, train_per_mode=40, test_per_mode=20, pool_size=10)


def test_toy_explorer_retrains_when_a_control_changes():
    explorer = ToyExplorer(SMALL, seed=0)
    first_figure, first_status = explorer.figure, explorer.status.value
    assert explorer.result is not None and "under PGD" in first_status
    assert len(explorer.output.outputs) == 1  # the boundary plot

    explorer.lam.value = 0.0  # vanilla
    vanilla = dict(explorer.result)
    assert explorer.figure is not first_figure
    assert "λ = 0.00" in explorer.figure.axes[0].get_title()

    explorer.lam.value = 2.0
    explorer.source.value = "class_mean"
    assert "class_mean" in explorer.figure.axes[0].get_title()
    assert explorer.result != vanilla or explorer.status.value != first_status
    explorer.gradient.value = "log_softmax"
    assert len(explorer.output.outputs) == 1  # redrawn in place, not appended


def make_run(store, name, clean):
    run = store.create(name, {"epochs": 3, "name": name})
    run.write_json("record.json", {"kind": "real", "status": "complete", "sessions": []})
    run.write_json("metrics.json", {"clean": clean, "linf": clean / 4, "l2": clean / 2})
    run.artifacts.mkdir(parents=True, exist_ok=True)
    torch.save({"grid": torch.randint(0, 256, (1, 11, 3, 8, 8), dtype=torch.uint8)}, run.artifacts / "pag_grid.pt")
    return run


def test_stored_runs_explorer_shows_the_selected_run(tmp_path):
    store = RunStore(tmp_path)
    runs = {"λ = 0.1": make_run(store, "a", 0.9), "λ = 1": make_run(store, "b", 0.7), "λ = 10": None}
    explorer = StoredRunsExplorer(runs, class_names=tuple("abcdefghij"))
    assert list(explorer.slider.options) == ["λ = 0.1", "λ = 1"]  # the missing run is left out
    assert explorer.shown == "λ = 0.1"
    first = [o["data"].get("text/markdown", "") for o in explorer.output.outputs]
    explorer.slider.value = "λ = 1"
    assert explorer.shown == "λ = 1"
    second = [o["data"].get("text/markdown", "") for o in explorer.output.outputs]
    assert "`b`" in "".join(second) and "70.0%" in "".join(second) and first != second
    assert any("image/png" in o["data"] for o in explorer.output.outputs)


def test_stored_runs_explorer_without_runs_says_so():
    explorer = StoredRunsExplorer({"λ = 1": None})
    assert explorer.shown is None
    assert "No stored run" in explorer.output.outputs[0]["data"]["text/markdown"]
