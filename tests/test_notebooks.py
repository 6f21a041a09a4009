"""Notebooks: sources are stored clean, run with tiny parameters, and re-run to the same outputs."""

import json
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Tiny settings per notebook: seconds on a CPU. These are code tests, never results.
SMOKE_PARAMETERS = {
    "toy_manifold": dict(seeds=[0], epochs=2, train_per_mode=30, test_per_mode=10, pool_size=5, progress=False),
}


def test_every_notebook_has_smoke_parameters():
    assert {p.stem for p in NOTEBOOKS} == set(SMOKE_PARAMETERS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_sources_are_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1


@pytest.mark.parametrize("name", sorted(SMOKE_PARAMETERS))
def test_smoke_run_executes_and_reruns_identically(name, tmp_path):
    executed = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"), str(executed),
        parameters=SMOKE_PARAMETERS[name], cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # nbval re-executes the notebook and compares every output with the stored one, except
    # cells tagged nbval-ignore-output (the run record, with its dates and wall time).
    rerun = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(executed), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:]
