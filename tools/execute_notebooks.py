"""Execute the book's CPU-feasible notebooks with papermill, writing them where the book reads them.

    python tools/execute_notebooks.py            # every notebook in BOOK_NOTEBOOKS
    python tools/execute_notebooks.py toy_manifold

Each entry names the source notebook in notebooks/, the executed copy under book/ and the
parameters for the book build. The executed copy is written next to its run record.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent

# name -> (executed copy under book/, papermill parameters)
BOOK_NOTEBOOKS: dict[str, tuple[str, dict]] = {
    # The real toy run: the paper's setting, twenty seeds trained as one batched model, and the
    # checks of what moves its numbers (about two minutes on two CPU cores).
    "toy_manifold": ("book/experiments/toy_manifold.ipynb", {"record_path": "toy_manifold.record.json", "interactive": False}),
    # The real-data chapters only read the run store here (train_missing=False): seconds.
    "cifar10": ("book/experiments/cifar10.ipynb", {"progress": False}),
    "stl10": ("book/experiments/stl10.ipynb", {"progress": False}),
    "lambda_ablation": ("book/appendix/lambda_ablation.ipynb", {"progress": False, "interactive": False}),
    "seed_error_bars": ("book/appendix/seed_error_bars.ipynb", {"progress": False}),
    # Reads the stored evaluations of every real run (python -m pagcore evaluate --attacks ...): seconds.
    "gradient_masking": ("book/experiments/gradient_masking.ipynb", {"progress": False}),
    # Last: it reads the toy chapter's record written above.
    "reproduction_status": ("book/status.ipynb", {}),
}


def execute(name: str) -> None:
    target, parameters = BOOK_NOTEBOOKS[name]
    output = ROOT / target
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"executing notebooks/{name}.ipynb -> {target}", flush=True)
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"),
        str(output),
        parameters=parameters,
        cwd=str(output.parent),
        kernel_name="python3",
        progress_bar=False,
        log_output=True,
    )
    hide_injected_parameters(output)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def hide_injected_parameters(path: Path) -> None:
    """Tag papermill's injected-parameters cell remove-input, as the parameters cell it overrides is.

    papermill gives the cell it adds no tags but its own, so without this the book would open
    with a code cell; each chapter shows the parameters in use as a table instead.
    """
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-input" not in tags:
            cell.metadata["tags"] = [*tags, "remove-input"]
    nbformat.write(notebook, path)


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BOOK_NOTEBOOKS]
    if unknown:
        print(f"unknown notebook(s) {unknown}; choose from {sorted(BOOK_NOTEBOOKS)}", file=sys.stderr)
        return 2
    for name in names or BOOK_NOTEBOOKS:
        execute(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
