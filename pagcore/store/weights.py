"""Final weights kept in git history instead of the working tree.

Every tracked byte travels with each call to a lent GPU machine, whose transfers are capped, so
the final weights of a finished CPU-scale run are committed once and then taken out of the tree:
``weights.json`` beside the run names the git blob that holds them (with its size and SHA-256),
and any clone with the history restores them on demand, locally and without a download. The
restored file is ignored by git (see ``.gitignore``), so it never travels again.

    python -m pagcore weights archive runs/<run>    (the weights must be in a commit first)
    python -m pagcore weights restore --all
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pagcore.store.provenance import write_json_atomic

RECORD = "weights.json"
FINAL = "checkpoint-final.pt"


class WeightsError(RuntimeError):
    """Weights that cannot be archived or restored, with what to do about it."""


def _git(root: Path, *args: str, binary: bool = False) -> Any:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise WeightsError("git is not installed; archived weights live in the repository's history") from None
    if done.returncode != 0:
        raise WeightsError(f"git {' '.join(args)}: {done.stderr.decode().strip()}")
    return done.stdout if binary else done.stdout.decode().strip()


def _repository(path: Path) -> Path:
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel"))
    except WeightsError:
        raise WeightsError(f"{path} is not inside a git clone, where archived weights are kept") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _committed(root: Path, blob: str) -> bool:
    """Whether some commit of the current branch holds ``blob`` (so every clone of it has the blob)."""
    try:
        return bool(_git(root, "log", "-1", "--format=%H", f"--find-object={blob}", "HEAD"))
    except WeightsError:  # a branch without commits
        return False


def is_archived(run_path: Path) -> bool:
    return (Path(run_path) / RECORD).exists()


def restorable(run_path: Path) -> bool:
    """Whether ``run_path``'s archived weights can be restored here: a clone that holds their blob
    (a machine sent a copy of the tree without ``.git`` cannot)."""
    if not is_archived(run_path):
        return False
    blob = json.loads((Path(run_path) / RECORD).read_text())["git_blob"]
    try:
        _git(Path(run_path), "cat-file", "-e", f"{blob}^{{blob}}")
    except WeightsError:
        return False
    return True


def unarchived(root: Path) -> list[str]:
    """CPU-scale runs under ``root`` whose final weights are on disk but neither tracked by git nor
    archived: the ignore rules hide them from ``git status``, so nothing else says they would be lost."""
    root = Path(root).resolve()
    repository = _repository(root)
    tracked = set(_git(repository, "ls-files", "--", str(root)).splitlines())
    lost = []
    for weights in sorted(root.glob(f"*-cpu-*/{FINAL}")):
        if not is_archived(weights.parent) and weights.relative_to(repository).as_posix() not in tracked:
            lost.append(weights.parent.name)
    return lost


def archive(run_path: Path) -> dict[str, Any]:
    """Record where ``run_path``'s final weights live in history and take them out of the index.

    The weights must already be in a commit of the current branch, so that every clone of it
    holds the blob; the file itself stays on disk (ignored from now on)."""

    run_path = Path(run_path).resolve()
    weights = run_path / FINAL
    params = run_path / "params.json"
    if not params.exists() or json.loads(params.read_text()).get("scale") != "cpu":
        # Paper-scale weights travel apart and the denoisers stay in the tree (the GPU machine needs them).
        raise WeightsError(f"{run_path.name} is not a CPU-scale run; only their final weights are archived")
    if not weights.exists():
        raise WeightsError(f"{weights} does not exist: nothing to archive")
    root = _repository(run_path)
    relative = weights.relative_to(root).as_posix()
    blob = _git(root, "hash-object", str(weights))
    if not _committed(root, blob):
        raise WeightsError(
            f"{relative} is in no commit of this branch; commit it first: git add -f {relative} && git commit"
        )
    data = weights.read_bytes()
    record = {"file": FINAL, "bytes": len(data), "sha256": _sha256(data), "git_blob": blob}
    write_json_atomic(run_path / RECORD, record)
    if _git(root, "ls-files", relative):
        _git(root, "rm", "--cached", "--quiet", relative)
    return record


def restore(run_path: Path) -> Path:
    """Write ``run_path``'s archived final weights back from git history (verified by SHA-256)."""

    run_path = Path(run_path)
    target = run_path / FINAL
    if target.exists():
        return target
    record_path = run_path / RECORD
    if not record_path.exists():
        raise WeightsError(f"{run_path.name} has no final weights and no {RECORD} naming them in history")
    record = json.loads(record_path.read_text())
    root = _repository(run_path)
    try:
        data = _git(root, "cat-file", "blob", record["git_blob"], binary=True)
    except WeightsError:
        raise WeightsError(
            f"this clone lacks the commit that holds {run_path.name}'s weights (blob {record['git_blob'][:10]});"
            " a shallow clone needs: git fetch --unshallow"
        ) from None
    if len(data) != record["bytes"] or _sha256(data) != record["sha256"]:
        raise WeightsError(f"blob {record['git_blob'][:10]} does not match {record_path}")
    with tempfile.NamedTemporaryFile(dir=run_path, prefix=f".{FINAL}.", suffix=".tmp", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, target)
    return target
