"""Moving files to and from the lent GPU machine within its transfer limits.

The device tool sends the working tree (tracked files and untracked files that git does not
ignore) with every command, plus up to 8 ignored "carry" paths, 64 MiB in all; it returns at
most 8 files of under 16 MiB each, 64 MiB together, from ``$OUT``. Three small pieces live here
so that they can be tested on CPU:

* :func:`tree_bytes`: the size of what travels with every command anyway;
* :func:`plan_parts`: files packed into as few carry folders as the room left allows
  (first-fit decreasing), refusing before anything is sent if one file cannot fit at all;
* :func:`split_file` / :func:`join_parts`: one large file (a checkpoint, an archive) as numbered
  parts under the per-file limit with a manifest of SHA-256 digests, and back, verified.

Only the standard library: the GPU machine and the staging side both run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

MiB = 2**20
CARRY_LIMIT = 64 * MiB
"""What one device command may carry in: the working tree and the carried paths together."""
RETURN_TOTAL_LIMIT = 64 * MiB
RETURN_FILES = 8
PART_BYTES = 15 * MiB
"""Parts stay a full MiB under the 16 MiB per-file limit, so no rounding of the limit can bite."""
SAFETY_BYTES = 1 * MiB
"""Kept free in every carry: the tree may grow by a commit between planning and sending."""
MANIFEST_SUFFIX = ".parts.json"
"""What :func:`split_file` appends to a file's name for the manifest of its parts."""


def describe_size(size: int) -> str:
    return f"{size / MiB:.2f} MiB" if size >= MiB // 10 else f"{size} bytes"


def sha256_of(path: Path, chunk: int = 4 * MiB) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- what travels anyway -----------------------------------------------------------------------------


def travelling_files(repo: Path) -> list[Path]:
    """Tracked files that exist, plus untracked files git does not ignore: what every command sends."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout.decode()
    paths = {repo / name for name in listed.split("\0") if name}
    return sorted(p for p in paths if p.is_file() and not p.is_symlink())


def tree_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in travelling_files(repo))


# -- carry planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One file to carry: where it is here and where it goes inside its part folder."""

    source: str
    destination: str
    size: int


@dataclass
class CarryPlan:
    room: int  # bytes a part may hold: the limit less the travelling tree and the safety margin
    tree: int
    parts: list[list[Item]] = field(default_factory=list)

    def sizes(self) -> list[int]:
        return [sum(item.size for item in part) for part in self.parts]

    def to_json(self) -> dict:
        return {
            "room": self.room,
            "tree": self.tree,
            "limit": CARRY_LIMIT,
            "parts": [[asdict(item) for item in part] for part in self.parts],
        }


class PlanError(ValueError):
    pass


def room_for_carry(tree: int, limit: int = CARRY_LIMIT, safety: int = SAFETY_BYTES) -> int:
    room = limit - tree - safety
    if room <= 0:
        raise PlanError(
            f"the working tree alone ({tree / MiB:.1f} MiB) leaves no room under the "
            f"{limit / MiB:.0f} MiB carry limit; untrack large files (e.g. checkpoints) first"
        )
    return room


def plan_parts(items: list[Item], room: int, tree: int = 0) -> CarryPlan:
    """Pack ``items`` into as few parts of at most ``room`` bytes as first-fit decreasing finds.

    Raises :class:`PlanError` naming the file when one item is larger than a whole part.
    """
    too_big = [item for item in items if item.size > room]
    if too_big:
        names = ", ".join(f"{item.source} ({describe_size(item.size)})" for item in too_big)
        raise PlanError(f"larger than the {describe_size(room)} a carry has room for: {names}; split it first")
    plan = CarryPlan(room=room, tree=tree)
    free: list[int] = []
    # Largest first, ties by name so that the plan is the same on every machine.
    for item in sorted(items, key=lambda i: (-i.size, i.destination)):
        slot = next((n for n, left in enumerate(free) if item.size <= left), None)
        if slot is None:
            plan.parts.append([])
            free.append(room)
            slot = len(free) - 1
        plan.parts[slot].append(item)
        free[slot] -= item.size
    return plan


def check_plan(plan: CarryPlan, tree_now: int, limit: int = CARRY_LIMIT) -> None:
    """Checked again just before sending: the tree may have grown since the plan was made."""
    for number, size in enumerate(plan.sizes(), 1):
        if tree_now + size > limit:
            raise PlanError(
                f"part {number}: {describe_size(size)} with a {describe_size(tree_now)} tree is over "
                f"the {describe_size(limit)} limit; plan again"
            )


# -- one file as parts -------------------------------------------------------------------------------


def split_file(path: Path, out_dir: Path, part_bytes: int = PART_BYTES, stem: str | None = None) -> Path:
    """Write ``path`` as ``<stem>.part01``, ``.part02``, ... in ``out_dir`` and a manifest
    ``<stem>.parts.json`` (size and SHA-256 of the whole and of each part); returns the manifest."""
    path, out_dir = Path(path), Path(out_dir)
    stem = stem or path.name
    out_dir.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    count = max(1, -(-size // part_bytes))
    parts = []
    with open(path, "rb") as source:
        for number in range(1, count + 1):
            block = source.read(part_bytes)
            part = out_dir / f"{stem}.part{number:02d}"
            part.write_bytes(block)
            parts.append({"name": part.name, "size": len(block), "sha256": hashlib.sha256(block).hexdigest()})
    manifest = {"file": path.name, "size": size, "sha256": sha256_of(path), "parts": parts}
    manifest_path = out_dir / f"{stem}{MANIFEST_SUFFIX}"
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest_path


def missing_parts(manifest_path: Path, folder: Path | None = None) -> list[str]:
    manifest = json.loads(Path(manifest_path).read_text())
    folder = Path(folder or Path(manifest_path).parent)
    return [p["name"] for p in manifest["parts"] if not (folder / p["name"]).is_file()]


def join_parts(manifest_path: Path, target: Path, folder: Path | None = None) -> Path:
    """Rebuild the file a manifest describes at ``target``; every part and the whole are verified,
    and the target is written atomically, so a failed join leaves nothing half-written."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    folder = Path(folder or manifest_path.parent)
    missing = missing_parts(manifest_path, folder)
    if missing:
        raise FileNotFoundError(f"{manifest['file']}: missing part(s) {', '.join(missing)} in {folder}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.joining")
    whole = hashlib.sha256()
    with open(temporary, "wb") as out:
        for part in manifest["parts"]:
            block = (folder / part["name"]).read_bytes()
            if hashlib.sha256(block).hexdigest() != part["sha256"]:
                temporary.unlink()
                raise ValueError(f"{part['name']} is corrupt (SHA-256 differs from {manifest_path.name})")
            whole.update(block)
            out.write(block)
    if whole.hexdigest() != manifest["sha256"]:
        temporary.unlink()
        raise ValueError(f"{manifest['file']}: the joined parts do not match the manifest's SHA-256")
    os.replace(temporary, target)
    return target
