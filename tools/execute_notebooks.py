"""Execute the book's CPU-feasible notebooks with papermill, writing them where the book reads them.

    python tools/execute_notebooks.py            # every notebook in BOOK_NOTEBOOKS
    python tools/execute_notebooks.py toy_manifold

Each entry names the executed copy under book/, the source notebook in notebooks/ and the
parameters for the book build. The executed copy is written next to its run record. One source
notebook may make several chapters (``real_data`` makes CIFAR-10 and STL-10): such a chapter
names an introduction under book/, which replaces the source's first cell in the executed copy,
and its markdown's ``{dataset}`` and ``{title}`` (figure and table labels, captions) are filled in.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent

# Chapters made from another notebook: name -> (source notebook, introduction replacing its first cell).
SHARED_SOURCES: dict[str, tuple[str, str]] = {
    "cifar10": ("real_data", "book/experiments/intros/cifar10.md"),
    "stl10": ("real_data", "book/experiments/intros/stl10.md"),
}

# name -> (executed copy under book/, papermill parameters); the source is notebooks/<name>.ipynb
BOOK_NOTEBOOKS: dict[str, tuple[str, dict]] = {
    # The real toy run: the paper's setting, twenty seeds trained as one batched model, and the
    # checks of what moves its numbers (about two minutes on two CPU cores).
    "toy_manifold": (
        "book/experiments/toy_manifold.ipynb",
        {"record_path": "toy_manifold.record.json", "interactive": False},
    ),
    # The real-data chapters only read the run store here (train_missing=False): seconds.
    "cifar10": ("book/experiments/cifar10.ipynb", {"dataset": "cifar10", "progress": False}),
    "stl10": ("book/experiments/stl10.ipynb", {"dataset": "stl10", "progress": False}),
    "lambda_ablation": ("book/appendix/lambda_ablation.ipynb", {"progress": False, "interactive": False}),
    "seed_error_bars": ("book/appendix/seed_error_bars.ipynb", {"progress": False}),
    "k_study": ("book/appendix/k_study.ipynb", {"progress": False}),
    # Reads the stored evaluations of every real run (python -m pagcore evaluate --attacks ...): seconds.
    "gradient_masking": ("book/experiments/gradient_masking.ipynb", {"progress": False}),
    # Reads the denoiser run and the stored runs' alignment with its targets; draws the targets of four
    # test images (seconds) when the data is unpacked (the path is from the executed copy's folder).
    "score_based": ("book/experiments/score_based.ipynb", {"progress": False, "data": "../../.data/cifar10.npz"}),
    # Reads the noise-trained runs and their stored certificates and smoothed evaluations: seconds.
    "randomized_smoothing": ("book/experiments/randomized_smoothing.ipynb", {"progress": False}),
    # Reads adversarial training with and without the PAG term, over seeds: seconds.
    "latest_version": ("book/experiments/latest_version.ipynb", {"progress": False}),
    # Read the toy chapter's record written above and the run store: seconds.
    "reproduction_status": ("book/status.ipynb", {}),
    "introduction": ("book/intro.ipynb", {}),
    "conclusion": ("book/conclusion.ipynb", {}),
    # The cpu preset and its pilot, from the committed pilot results.
    "cpu_scale": ("book/appendix/cpu_scale.ipynb", {}),
}


def execute(name: str) -> None:
    target, parameters = BOOK_NOTEBOOKS[name]
    source, intro = SHARED_SOURCES.get(name, (name, None))
    output = ROOT / target
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"executing notebooks/{source}.ipynb -> {target}", flush=True)
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{source}.ipynb"),
        str(output),
        parameters=parameters,
        cwd=str(output.parent),
        kernel_name="python3",
        progress_bar=False,
        log_output=True,
    )
    hide_injected_parameters(output)
    if intro is not None:
        make_chapter(output, ROOT / intro, parameters["dataset"])
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def make_chapter(path: Path, intro: Path, dataset: str) -> None:
    """Turn an executed shared notebook into one dataset's chapter: its introduction first, and
    labels and captions that name the dataset (labels must be unique across the book)."""
    from pagcore.data import SPECS

    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0] = nbformat.v4.new_markdown_cell(intro.read_text())
    for cell in notebook.cells[1:]:
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("{dataset}", dataset).replace("{title}", SPECS[dataset].title)
    nbformat.write(notebook, path)


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
