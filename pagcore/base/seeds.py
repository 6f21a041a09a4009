"""Seeds derived from several integers, so that every (seed, epoch, step) of a run has its own random stream."""

from __future__ import annotations


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, so that (seed, epoch, step) each get their own stream."""
    value = 0x9E3779B97F4A7C15
    for p in parts:
        value = (value * 6364136223846793005 + p + 1442695040888963407) % (1 << 63)
    return value
