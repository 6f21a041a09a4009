"""Operational tooling that uses pagcore from outside it."""
