"""The run store: one directory per training run, named by its parameters.

A run's directory (``runs/<name>/``) holds:

* ``params.json``: the parameters that define the run (its identity);
* ``record.json``: provenance (git sha, device, torch version, dates, wall time summed over
  every session that worked on it, rewritten at every checkpoint so that a killed session keeps
  its share), the run's ``kind`` (``real``; ``smoke`` runs test code and ``pilot`` runs choose a
  preset, and neither is ever a result) and ``status``
  (``running``, ``interrupted``, ``trained`` without final evaluation, or ``complete``);
* ``history.json``: one entry per finished epoch, and ``train.log``, a line per session and epoch;
* ``metrics.json``: the final evaluation;
* ``checkpoint-latest.pt`` (weights and optimiser state of an unfinished run; git keeps the CPU
  scale's, so that another clone resumes it) and ``checkpoint-final.pt`` (the trained weights),
  which the tree does not keep: a finished CPU-scale run's are committed once and named by
  ``weights.json`` in git history (:mod:`pagcore.store.weights`), restored when first read; the
  paper scale's travel apart (see ``.gitignore`` and ``ops/gpu_window``);
* ``artifacts/``: figures and arrays, e.g. the PAG picture grid.

Every file is written atomically (to a temporary file, then renamed), so a run killed at any
moment leaves either the old or the new version of each file, never half of one. Checkpoints
are read with ``torch.load(weights_only=True)``: loading a run never executes code from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from pagcore.data import SPECS
from pagcore.paper.models import build_model
from pagcore.store import weights
from pagcore.store.provenance import utc_now, write_json_atomic

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "runs"


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def parameter_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:10]


def run_name(readable: str, identity: dict[str, Any]) -> str:
    """``<readable>-<hash of the identity>``, e.g. ``cifar10-class_mean-lam0.4-e100-s0-1a2b3c4d5e``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", readable)
    return f"{safe}-{parameter_hash(identity)}"


class Run:
    """One run directory. Cheap to construct; files are read on demand."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    # -- JSON parts -------------------------------------------------------------------------
    def _read(self, filename: str, default: Any = None) -> Any:
        file = self.path / filename
        return json.loads(file.read_text()) if file.exists() else default

    @property
    def params(self) -> dict[str, Any]:
        return self._read("params.json", {})

    @property
    def record(self) -> dict[str, Any]:
        return self._read("record.json", {})

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._read("history.json", [])

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self._read("metrics.json")

    @property
    def configuration(self) -> str:
        """The run's parameters without its seed, as one key: runs that share it differ in their seed alone."""
        return json.dumps({k: v for k, v in self.params.items() if k != "seed"}, sort_keys=True)

    @property
    def status(self) -> str:
        return self.record.get("status", "new")

    @property
    def kind(self) -> str:
        return self.record.get("kind", "smoke")

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.metrics is not None

    def log(self, message: str) -> None:
        """Append a timestamped line to the run's ``train.log``: what a run in the background did, and when."""

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "train.log", "a") as log:
            log.write(f"{utc_now()}  {message}\n")

    def write_json(self, filename: str, payload: Any) -> None:
        write_json_atomic(self.path / filename, payload)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, which: str = "latest") -> Path:
        return self.path / f"checkpoint-{which}.pt"

    def save_checkpoint(self, state: dict[str, Any], which: str = "latest") -> None:
        target = self.checkpoint_path(which)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, target)

    @property
    def trained(self) -> bool:
        """Whether the final weights are here, or archived in the history of the clone they sit in."""
        return self.checkpoint_path("final").exists() or weights.restorable(self.path)

    def load_checkpoint(self, which: str = "latest", map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        path = self.checkpoint_path(which)
        if which == "final" and not path.exists() and weights.is_archived(self.path):
            try:
                weights.restore(self.path)
            except weights.WeightsError as error:  # e.g. a copy of the tree without .git
                raise FileNotFoundError(f"run {self.name}: {error}") from None
        if not path.exists():
            return None
        return torch.load(path, map_location=map_location, weights_only=True)

    def load_model(self, which: str = "final", device: torch.device | str = "cpu") -> torch.nn.Module:
        """The run's model, in eval mode, from its final (or latest) checkpoint."""

        state = self.load_checkpoint(which, map_location=device)
        if state is None:
            raise FileNotFoundError(
                f"run {self.name} has no {which} checkpoint (paper-scale checkpoints are not kept in git)"
            )
        dataset = self.params["dataset"]
        model = build_model(
            dataset,
            SPECS[dataset].num_classes,
            width=self.params["width"],
            architecture=self.params.get("architecture", "resnet18"),
            depth=self.params.get("depth"),
        )
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    def clear(self) -> None:
        """Forget everything but the identity (for retraining the same parameters)."""
        for name in (
            "checkpoint-latest.pt",
            "checkpoint-final.pt",
            weights.RECORD,
            "history.json",
            "metrics.json",
            "record.json",
        ):
            (self.path / name).unlink(missing_ok=True)
        for folder in (self.artifacts, self.path / "evaluations"):
            if folder.exists():
                for file in folder.iterdir():
                    file.unlink()

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    def __repr__(self) -> str:
        return f"Run({self.name!r}, status={self.status!r}, kind={self.kind!r})"


class RunStore:
    """All runs under one root directory (``runs/`` at the repository root by default)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else DEFAULT_ROOT

    def run(self, name: str) -> Run:
        return Run(self.root / name)

    def create(self, name: str, params: dict[str, Any]) -> Run:
        """The run called ``name``; its params.json is written on first use and checked after."""
        run = self.run(name)
        existing = run.params
        if existing and canonical_json(existing) != canonical_json(params):
            raise ValueError(f"run {name} exists with different parameters; refusing to mix them")
        if not existing:
            run.write_json("params.json", params)
        return run

    def find(self, reference: str | Path) -> Run:
        """A run by name (in this store) or by path to its directory."""
        path = Path(reference)
        for candidate in (path, self.root / str(reference)):
            if (candidate / "params.json").exists():
                return Run(candidate)
        raise FileNotFoundError(
            f"no run '{reference}' (looked for a directory with params.json at '{path}' "
            f"and '{self.root / str(reference)}')"
        )

    def runs(self) -> list[Run]:
        if not self.root.exists():
            return []
        return sorted((Run(p.parent) for p in self.root.glob("*/params.json")), key=lambda r: r.name)

    def select(self, *, kind: str | None = "real", complete: bool = True, **params: Any) -> list[Run]:
        """Runs whose params include every ``key=value`` given (and of the given kind/status)."""
        chosen = []
        for run in self.runs():
            if kind is not None and run.kind != kind:
                continue
            if complete and not run.complete:
                continue
            p = run.params
            if all(p.get(k) == v for k, v in params.items()):
                chosen.append(run)
        return chosen
