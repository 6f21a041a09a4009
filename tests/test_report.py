"""The chapters' table of parameters in use."""

import nbformat
import pytest

from pagcore import report


def write_notebook(path, parameters_source: str, tagged: int = 1):
    cells = [nbformat.v4.new_code_cell(parameters_source) for _ in range(tagged)]
    for cell in cells:
        cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_code_cell("x = 1")]), path)
    return path


def test_parameter_names_come_from_the_parameters_cell_in_order(tmp_path):
    path = write_notebook(tmp_path / "nb.ipynb", "# comment\nseeds = [0, 1]\nlam = 0.4  # weight\nseeds = [2]\n")
    assert report.parameter_names(path) == ["seeds", "lam"]


def test_parameter_names_needs_exactly_one_parameters_cell(tmp_path):
    with pytest.raises(ValueError, match="found 2"):
        report.parameter_names(write_notebook(tmp_path / "nb.ipynb", "a = 1", tagged=2))


def test_parameters_table_pairs_names_with_their_values_and_links_the_notebook():
    text = report.parameters_table(
        {"a": 1, "b": "x|y", "c": None, "d": [1, 2]}, ["a", "b", "c", "d"], "LINK", columns=3
    )
    lines = text.splitlines()
    assert lines[0] == ":::{container} parameters-in-use" and lines[-1] == ":::"
    assert "LINK" in lines[1]
    rows = [line for line in lines if line.startswith("| `")]
    assert rows[0] == "| `a` | `1` | `b` | `'x\\|y'` | `c` | `None` |"
    assert rows[1] == "| `d` | `[1, 2]` |  |  |  |  |", "the last row is padded to full width"


def test_every_chapter_notebook_lists_its_parameters():
    for path in sorted(report.NOTEBOOKS.glob("*.ipynb")):
        assert report.parameter_names(path), path.name


def test_parameters_table_has_two_pairs_per_row_by_default():
    rows = [
        line
        for line in report.parameters_table({"a": 1, "b": 2, "c": 3}, "abc", "LINK").splitlines()
        if line.startswith("| `")
    ]
    assert rows == ["| `a` | `1` | `b` | `2` |", "| `c` | `3` |  |  |"]
