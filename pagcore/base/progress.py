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


def progress_bar(
    iterable: Iterable[T], *, enabled: bool = True, desc: str = "", unit: str = "it", total: int | None = None
) -> Iterator[T]:
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, unit=unit, total=total, file=sys.stderr, mininterval=1.0, dynamic_ncols=True))


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def counter_bar(*, total: int, initial: int = 0, enabled: bool = True, desc: str = "", unit: str = "it"):
    """A bar advanced by hand (``bar.update(n)``), used as a context manager; shows rate and ETA.

    For loops whose unit of work is not the loop's item, e.g. images in a training run that
    resumes mid-epoch (``initial`` is what an earlier session already did).
    """
    if not enabled:
        return _NoBar()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        mininterval=1.0,
        dynamic_ncols=True,
    )
