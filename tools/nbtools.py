"""Helpers for keeping the notebook sources in notebooks/ clean.

python tools/nbtools.py strip notebooks/*.ipynb    # drop outputs and execution counts
python tools/nbtools.py check notebooks/*.ipynb    # fail if any are left (used by the tests)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def has_outputs(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells)


def strip(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    command, paths = argv[0], [Path(p) for p in argv[1:]]
    if command == "strip":
        for p in paths:
            strip(p)
        return 0
    dirty = [str(p) for p in paths if has_outputs(p)]
    if dirty:
        print("notebooks with stored outputs (run tools/nbtools.py strip):", *dirty, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
