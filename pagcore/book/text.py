"""Putting results on the page: percentages, Markdown tables, records, parameters, and glue.

Numbers reach the book's prose only through :func:`glue`, which hands them to myst-nb; the
tables here are plain Markdown so they read the same in Jupyter, in the HTML book and on
GitHub.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pagcore.paper.attacks import NORM_WORDS

METRIC_COLUMNS = (("clean", "clean"), *NORM_WORDS.items())
"""The accuracy columns of every results table: (metric key, heading)."""


def _show_markdown(text: str) -> None:
    """Display Markdown in a notebook; IPython is imported only here, so the rest of this module
    (and the status page's data, which uses it) works without Jupyter."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def percent(value: float | None, std: float | None = None, digits: int = 1) -> str:
    """``0.755`` -> ``"75.5%"``; with a std, ``"75.5 ± 2.1%"``; ``None`` -> ``"not run"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    if std is None:
        return f"{100 * value:.{digits}f}%"
    return f"{100 * value:.{digits}f} ± {100 * std:.{digits}f}%"


def mean_std(experiment: Any, model: str, metric: str) -> str:
    """A toy experiment's mean ± std over seeds of ``metric`` for ``model``, as a percentage."""
    return percent(experiment.mean(model, metric), experiment.std(model, metric))


def verb(count: int, plural: str) -> str:
    """A regular verb agreeing with ``count`` subjects: ``verb(1, "align") == "aligns"``."""
    return plural + "s" if count == 1 else plural


def listed(names: Sequence[str]) -> str:
    """Names joined as in a sentence: "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def placeholder_table(header: Sequence[str], message: str) -> str:
    """A table of the given columns whose one row says why it is empty. Myst's table directive takes
    exactly one table, so a glued table that has nothing to show still has to be a table."""
    return markdown_table(header, [(message, *("—" for _ in header[1:]))])


def show_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    _show_markdown(markdown_table(header, rows))


def show_record(record: dict[str, Any]) -> None:
    """Display a provenance record: the facts first, the full JSON folded below."""
    facts = [
        ("kind", record.get("kind")),
        ("code version (git)", record.get("git")),
        ("device", record.get("device")),
        ("torch", record.get("torch")),
        ("started (UTC)", record.get("started")),
        ("wall time", f"{record.get('wall_seconds', float('nan')):.1f} s"),
    ]
    text = markdown_table(("run record", "value"), facts)
    text += "\n\n<details><summary>parameters</summary>\n\n```json\n"
    text += json.dumps(record.get("parameters", {}), indent=1, sort_keys=True)
    text += "\n```\n</details>"
    _show_markdown(text)


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's ``{glue}`` roles (no-op without myst-nb)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # plain Jupyter without the book's tooling: nothing to glue into
        return
    myst_glue(name, value, display=display)


NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def parameter_names(notebook: str | Path) -> list[str]:
    """The names assigned in a notebook's cell tagged ``parameters``, in their order there."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(tagged)}")
    source = "".join(tagged[0]["source"])
    names = [
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    return list(dict.fromkeys(names))


INTERNAL_PARAMETERS = frozenset({"progress", "runs_dir", "synthetic"})
"""Parameters that change how a notebook runs (bars, where runs are stored, smoke-test images) but
not what it computes: papermill accepts them, the book's tables leave them out."""


UNSET_MEANS = {"max_minutes": "no limit", "data": "not given (stored runs only)"}
"""What a parameter left unset means in every notebook that has it."""


def parameters_table(
    values: Mapping[str, Any],
    names: Sequence[str],
    notebook_link: str,
    columns: int = 2,
    resolved: Mapping[str, str] | None = None,
) -> str:
    """MyST Markdown: ``names`` with their ``values`` in ``columns`` name/value pairs per row, then the link.

    A value of None or "" that ``resolved`` (or :data:`UNSET_MEANS`) names, a knob whose default is
    set elsewhere, shows what it resolves to instead. The block is wrapped in a container of class
    ``parameters-in-use`` so that the book's browser test can tell this table of inputs from the
    results that follow it.
    """
    resolved = {**UNSET_MEANS, **(resolved or {})}

    def cell(name: str) -> str:
        if values[name] in (None, "") and name in resolved:
            return resolved[name]
        return f"`{values[name]!r}`".replace("|", "\\|")  # a "|" inside a value would end its cell early

    pairs = [(f"`{name}`", cell(name)) for name in names if name not in INTERNAL_PARAMETERS]
    columns = max(1, min(columns, len(pairs)))  # no empty pair of columns beside too few parameters
    pairs += [("", "")] * (-len(pairs) % columns)  # pad the last row to full width
    rows = [sum(pairs[i : i + columns], ()) for i in range(0, len(pairs), columns)]
    table = markdown_table(("parameter", "value") * columns, rows)
    return (
        f":::{{container}} parameters-in-use\n**Parameters of this run.** {notebook_link} holds the code; "
        f"rerun it with papermill to change them.\n\n{table}\n:::"
    )


def show_parameters(namespace: Mapping[str, Any], notebook: str, resolved: Mapping[str, str] | None = None) -> None:
    """Show the values ``notebook`` (a name in notebooks/) runs with, after any papermill overrides,
    with ``resolved`` standing in for knobs left at None (see :func:`parameters_table`).

    The names come from the source notebook's parameters cell, so the table lists exactly what
    papermill can change; the link makes the book copy the clean source notebook for download.
    """
    names = parameter_names(NOTEBOOKS / f"{notebook}.ipynb")
    link = f"{{download}}`The notebook <{'/notebooks/' + notebook + '.ipynb'}>`"
    _show_markdown(parameters_table(namespace, names, link, resolved=resolved))


def points(fraction: float) -> str:
    return f"{100 * fraction:.0f}"


def duration(seconds: float) -> str:
    """A short duration in words: seconds under two minutes, minutes above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def triple(values: Mapping[str, float], digits: int = 2) -> str:
    """The three metric columns of ``values`` as points, ``"79.13 / 15.93 / 50.26"``."""
    return " / ".join(f"{100 * values[key]:.{digits}f}" for key, _ in METRIC_COLUMNS)


def short_device(description: str) -> str:
    """``"cpu: Intel(R) Xeon(R) Processor (2 logical cores, ...)"`` -> ``"CPU: Intel Xeon Processor"``."""
    kind, _, name = description.partition(": ")
    name = name.split(" (")[0].replace("(R)", "").replace("(TM)", "").strip()
    return f"{kind.upper()}: {name}" if name else description


def shown_points(a: float, b: float) -> float:
    """``a - b`` in percentage points, as the reader computes it from the two percentages shown (one
    decimal each), so that a printed difference always matches the printed numbers."""
    return round(round(100 * a, 1) - round(100 * b, 1), 1)


def point_differences(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """``a - b`` in percentage points, per column of :data:`METRIC_COLUMNS`: ``"-2.0, +0.4, -1.3"``."""
    return ", ".join(signed_points(shown_points(a[key], b[key])) for key, _ in METRIC_COLUMNS)


def signed_points(points: float) -> str:
    """``+1.3``, ``-0.4``; a difference that rounds to zero reads ``0.0``, not ``-0.0``."""
    text = f"{points:+.1f}"
    return "0.0" if float(text) == 0 else text
