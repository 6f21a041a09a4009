"""Stopping a long loop cleanly: the first SIGINT/SIGTERM asks, a second one insists."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """While active, SIGINT/SIGTERM ask the loop to stop after the current step.

    The loop then saves a checkpoint and returns instead of dying mid-update. A second
    signal interrupts at once. Outside the main thread signals cannot be caught; the
    context then does nothing.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
