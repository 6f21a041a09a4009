"""Progress bars for long loops (training epochs, evaluation batches).

Plain-text tqdm on stderr: it works the same in a terminal, in Jupyter and under papermill,
and the book drops stderr, so bars never clutter the rendered pages.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.std import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, enabled: bool = True, desc: str = "", unit: str = "it", total: int | None = None) -> Iterator[T]:
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, mininterval=1.0, dynamic_ncols=True))
