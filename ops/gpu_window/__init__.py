"""Spending a time-limited GPU session by script: staging data within a transfer limit, the
campaign that trains and evaluates in resumable slices, and bringing the results back.

Only public pieces of :mod:`pagcore` are used; nothing in :mod:`pagcore` knows about this folder.
See README.md beside this file.
"""
