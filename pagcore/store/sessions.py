"""A run's record while a process works on it: one entry per session, saved at every checkpoint.

A run may be trained by several processes one after another (a stopped session, a killed one, a
different machine). Its ``record.json`` lists every session with its device, code version, dates
and wall time, and sums the wall time over them; a process killed without closing its session
leaves the record of its last checkpoint, marked as killed by the next session.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pagcore.store.provenance import device_description, running_revision, utc_now
from pagcore.store.runs import Run


class SessionRecord:
    """A run's ``record.json`` with the session now working on it: saved at every checkpoint, so
    a killed process loses none of what it checkpointed."""

    def __init__(self, run: Run, record: dict[str, Any], entry: dict[str, Any]):
        self.run, self.record, self.entry = run, record, entry
        self.clock, self.earlier_wall = time.perf_counter(), record["wall_seconds"]

    @classmethod
    def begin(cls, run: Run, fields: dict[str, Any], device: torch.device) -> SessionRecord:
        """A session of ``run`` on ``device``; ``fields`` (kind, scale, data) start a new record."""
        record = run.record or {**fields, "sessions": [], "wall_seconds": 0.0}
        if record.get("status") == "running" and record["sessions"]:
            # The last session was killed without closing its record (SIGKILL, power, a session's
            # end; an exception closes it as "failed"): what it did up to its last checkpoint is kept.
            record["sessions"][-1]["ended"] = "killed; its record stops at its last checkpoint"
        entry = {
            "started": utc_now(),
            "device": device_description(device),
            "git": running_revision(),
            "torch": torch.__version__,
        }
        record["sessions"].append(entry)
        session = cls(run, record, entry)
        session.save("running")
        return session

    def save(self, status: str) -> None:
        self.entry.update(finished=utc_now(), wall_seconds=round(time.perf_counter() - self.clock, 3))
        self.record["wall_seconds"] = round(self.earlier_wall + self.entry["wall_seconds"], 3)
        self.record["status"] = status
        self.run.write_json("record.json", self.record)
