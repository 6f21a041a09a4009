"""Small helpers the notebooks use to put results on the page: tables, records and glue.

Numbers reach the book's prose only through :func:`glue`, which hands them to myst-nb; the
tables here are plain Markdown so they read the same in Jupyter, in the HTML book and on
GitHub.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from IPython.display import Markdown, display


def percent(value: float | None, std: float | None = None, digits: int = 1) -> str:
    """``0.755`` -> ``"75.5%"``; with a std, ``"75.5 ± 2.1%"``; ``None`` -> ``"not run"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    if std is None:
        return f"{100 * value:.{digits}f}%"
    return f"{100 * value:.{digits}f} ± {100 * std:.{digits}f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def show_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    display(Markdown(markdown_table(header, rows)))


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
    text = markdown_table(("run record", ""), facts)
    text += "\n\n<details><summary>parameters</summary>\n\n```json\n"
    text += json.dumps(record.get("parameters", {}), indent=1, sort_keys=True)
    text += "\n```\n</details>"
    display(Markdown(text))


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's ``{glue}`` roles (no-op without myst-nb)."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # plain Jupyter without the book's tooling: nothing to glue into
        return
    myst_glue(name, value, display=display)
