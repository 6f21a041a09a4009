"""One type for every time budget: a training session's, a table of runs', a chunked evaluation's.

A :class:`Deadline` is a point on the monotonic clock (immune to the wall clock being set), or
none at all. Work asks it how much time is left before starting the next piece (an epoch's
batch, a run, a chunk of test images) and stops, resumably, once it has passed. (A deadline
handed to another process travels as a wall-clock time instead: monotonic readings are not
comparable between processes on every system.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace


@dataclass
class Deadline:
    """Stop by ``end`` (a :func:`time.monotonic` reading; ``math.inf``: never), counted from ``start``."""

    start: float
    end: float = math.inf

    @classmethod
    def after(cls, minutes: float | None) -> Deadline:
        """A deadline ``minutes`` from now; ``None`` never passes."""
        now = time.monotonic()
        return cls(now, math.inf if minutes is None else now + 60 * minutes)

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.end)

    def seconds_left(self) -> float:
        """Seconds until the deadline (negative once passed; ``math.inf`` without one)."""
        return self.end - time.monotonic()

    def minutes_left(self) -> float | None:
        """Minutes until the deadline, for an API that takes a budget in minutes; None without one."""
        return None if self.unlimited else self.seconds_left() / 60

    def passed(self) -> bool:
        return time.monotonic() > self.end

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.monotonic() - self.start

    def earlier(self, seconds: float) -> Deadline:
        """This deadline moved ``seconds`` sooner: what a step leaves to the steps after it."""
        return replace(self, end=self.end - seconds)
