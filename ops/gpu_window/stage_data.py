"""Stage the shared datasets (and carried-back checkpoint parts) for the GPU machine.

Every device command sends the working tree and its carried paths, 64 MiB in all. This script
measures what the tree already takes (``git ls-files`` sizes plus untracked files git does not
ignore), splits the files to send into as many carry folders as the room left needs (a file larger
than that room travels as pieces, joined again on arrival), and checks the sizes again right
before sending. Run it in the checkout the device tool sends (the main one):

    python ops/gpu_window/stage_data.py plan                      # CIFAR-10 -> .data/carry/part-1, part-2, ...
    python ops/gpu_window/stage_data.py plan --datasets cifar10 stl10
    python ops/gpu_window/stage_data.py check                     # just before the device calls: sizes still fit?

then one device call per part, back to back (the machine stays warm only ~30 s between calls),
each carrying one folder, e.g. ``carry: [".data/carry/part-1"]``; the last one runs

    python ops/gpu_window/stage_data.py unpack                    # on the GPU machine: .data/cifar10.npz, ...

which merges the parts that arrived into ``.data/staged/``, says which parts are missing (if
the machine was recycled between calls, send those again), decodes every complete dataset with
its own ``unpack.py`` (verified against its MANIFEST.json), rebuilds carried checkpoints from
their parts into the campaign's run store, and puts the carried Python packages (AutoAttack's,
~150 KB without its examples) into ``.data/pylib``, for ``PYTHONPATH=.data/pylib``. Only the
standard library (and, for decoding, the datasets' numpy + Pillow).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ops.gpu_window.transfer import (  # noqa: E402 (after the path set-up above)
    CARRY_LIMIT,
    MANIFEST_SUFFIX,
    CarryPlan,
    Item,
    MiB,
    PlanError,
    check_plan,
    join_parts,
    missing_parts,
    plan_parts,
    room_for_carry,
    split_file,
    tree_bytes,
)

SHARED = ROOT.parent / "shared" / "data"
CARRY = ROOT / ".data" / "carry"
STAGED = ROOT / ".data" / "staged"
CHECKPOINTS = ROOT / ".data" / "checkpoints"
CAMPAIGN_RUNS = ROOT / ".data" / "campaign" / "runs"
PLAN = "plan.json"
SPLIT = "split"
"""Carried folder of the pieces of files that no carry has room for, joined first on unpack."""
# Pure-Python packages the GPU machine lacks, carried into .data/pylib (put it on PYTHONPATH there):
# AutoAttack, whose package needs only torch and numpy.
CARRIED_PACKAGES = ("pyautoattack",)
PYLIB = "pylib"


def dataset_items(shared: Path, datasets: list[str]) -> list[Item]:
    """Every file of each dataset folder (mosaics, labels, manifest, unpack.py, README)."""
    items = []
    for name in datasets:
        folder = shared / name
        if not (folder / "unpack.py").is_file():
            raise PlanError(f"{folder} is not a shared dataset folder (no unpack.py)")
        items += [Item(str(f), f"{name}/{f.name}", f.stat().st_size) for f in sorted(folder.iterdir()) if f.is_file()]
    return items


def checkpoint_items(checkpoints: Path) -> list[Item]:
    """Checkpoint parts brought back from an earlier window (``.data/checkpoints/<run>/``), sent
    back so that an unfinished paper-scale run continues where it stopped."""
    if not checkpoints.is_dir():
        return []
    return [
        Item(str(f), f"checkpoints/{f.parent.name}/{f.name}", f.stat().st_size)
        for f in sorted(checkpoints.glob("*/*"))
        if f.is_file() and (".part" in f.name)
    ]


def site_packages_of(name: str, repo: Path = ROOT) -> Path | None:
    """The site-packages folder that holds package ``name``: this Python's, or the checkout's .venv."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin:
        return Path(spec.origin).parent.parent
    return next((site for site in sorted(repo.glob(".venv/lib/python*/site-packages")) if (site / name).is_dir()), None)


def package_items(names: tuple[str, ...] = CARRIED_PACKAGES, repo: Path = ROOT) -> tuple[list[Item], list[str]]:
    """Each package's Python files and its dist-info (its version is read from there), without
    examples or caches; and the names of those not installed here, which are not sent."""
    items, absent = [], []
    for name in names:
        site = site_packages_of(name, repo)
        if site is None:
            absent.append(name)
            continue
        package = site / name
        files = [f for f in sorted(package.rglob("*.py")) if "examples" not in f.relative_to(package).parts]
        for info in sorted(site.glob(f"{name}-*.dist-info")):
            files += [f for f in sorted(info.iterdir()) if f.is_file()]
        items += [Item(str(f), f"{PYLIB}/{f.relative_to(site)}", f.stat().st_size) for f in files]
    return items, absent


def split_oversized(items: list[Item], room: int, folder: Path) -> list[Item]:
    """Items that fit as they are, and each larger one as pieces of at most ``room`` bytes with a
    manifest (:func:`ops.gpu_window.transfer.split_file`), written under ``folder`` and sent under
    ``split/<its destination>``: a tree that leaves little room then costs more calls, not a refusal."""
    if folder.exists():
        shutil.rmtree(folder)
    fitted = []
    for item in items:
        if item.size <= room:
            fitted.append(item)
            continue
        destination = Path(SPLIT) / item.destination
        manifest = split_file(Path(item.source), folder / destination.parent, part_bytes=room, stem=destination.name)
        pieces = json.loads(manifest.read_text())["parts"]
        fitted += [
            Item(str(manifest.parent / p["name"]), str(destination.parent / p["name"]), p["size"]) for p in pieces
        ]
        fitted.append(Item(str(manifest), str(destination.parent / manifest.name), manifest.stat().st_size))
    return fitted


def arrives_as(destination: str) -> str | None:
    """Where a carried file lies in the staged folder once split pieces are joined; None for a piece."""
    if not destination.startswith(SPLIT + "/"):
        return destination
    inner = destination.removeprefix(SPLIT + "/")
    return inner.removesuffix(MANIFEST_SUFFIX) if inner.endswith(MANIFEST_SUFFIX) else None


def join_split(staged: Path) -> dict[str, str]:
    """Rebuild, in place under ``staged``, every file that travelled as pieces; says what is incomplete."""
    report = {}
    root = staged / SPLIT
    for manifest in sorted(root.rglob(f"*{MANIFEST_SUFFIX}")) if root.is_dir() else []:
        name = manifest.relative_to(root).as_posix().removesuffix(MANIFEST_SUFFIX)
        whole = staged / name
        absent = missing_parts(manifest)
        if absent:
            report[name] = f"incomplete: missing {', '.join(absent)}"
            continue
        if not whole.exists():
            join_parts(manifest, whole)
        report[name] = "joined"
    return report


def write_parts(plan: CarryPlan, carry: Path) -> list[Path]:
    """The plan's part folders, each with a copy of the whole plan (so any one part names the others)."""
    if carry.exists():
        shutil.rmtree(carry)
    folders = []
    for number, part in enumerate(plan.parts, 1):
        folder = carry / f"part-{number}"
        for item in part:
            target = folder / item.destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.source, target)
        folders.append(folder)
    summary = json.dumps(plan.to_json(), indent=1) + "\n"
    (carry / PLAN).parent.mkdir(parents=True, exist_ok=True)
    (carry / PLAN).write_text(summary)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PLAN).write_text(summary)
    return folders


def plan(
    repo: Path,
    shared: Path,
    datasets: list[str],
    checkpoints: Path,
    carry: Path,
    limit: int = CARRY_LIMIT,
    packages: list[Item] = (),
) -> CarryPlan:
    tree = tree_bytes(repo)
    room = room_for_carry(tree, limit)
    items = dataset_items(shared, datasets) + checkpoint_items(checkpoints) + list(packages)
    items = split_oversized(items, room, carry.with_name(carry.name + "-" + SPLIT))
    result = plan_parts(items, room, tree)
    write_parts(result, carry)
    return result


def stored_plan(carry: Path) -> CarryPlan:
    raw = json.loads((carry / PLAN).read_text())
    parts = [[Item(**item) for item in part] for part in raw["parts"]]
    return CarryPlan(room=raw["room"], tree=raw["tree"], parts=parts)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def check(repo: Path, carry: Path, limit: int = CARRY_LIMIT) -> list[int]:
    """The sizes of the part folders as they are on disk now, each checked with the tree as it is now."""
    tree_now = tree_bytes(repo)
    stored = stored_plan(carry)
    sizes = [folder_bytes(carry / f"part-{n}") for n in range(1, len(stored.parts) + 1)]
    check_plan(CarryPlan(room=stored.room, tree=tree_now, parts=[[Item("", "", s)] for s in sizes]), tree_now, limit)
    return sizes


def unpack(carry: Path, staged: Path, campaign_runs: Path, data_dir: Path) -> dict:
    """On the GPU machine: merge the parts present, decode complete datasets, join checkpoints."""
    plans = sorted(carry.glob(f"part-*/{PLAN}"))
    if not plans:
        raise SystemExit(f"no carried parts under {carry}: send .data/carry/part-N first")
    stored = stored_plan(plans[0].parent)
    present = {int(p.parent.name.split("-")[1]) for p in plans}
    missing = [n for n in range(1, len(stored.parts) + 1) if n not in present]
    for number in sorted(present):
        for file in (carry / f"part-{number}").rglob("*"):
            if file.is_file() and file.name != PLAN:
                target = staged / file.relative_to(carry / f"part-{number}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
    report: dict = {"parts": len(stored.parts), "missing_parts": missing, "datasets": {}, "checkpoints": {}}
    report["split"] = join_split(staged)
    if (staged / PYLIB).is_dir():
        shutil.copytree(staged / PYLIB, data_dir / PYLIB, dirs_exist_ok=True)
        report["pylib"] = f"{data_dir / PYLIB}: put it on PYTHONPATH"
    arriving = [arrives_as(i.destination) for part in stored.parts for i in part]
    for folder in sorted(p for p in staged.iterdir() if p.is_dir() and p.name not in ("checkpoints", PYLIB, SPLIT)):
        expected = {Path(d).name for d in arriving if d is not None and d.startswith(folder.name + "/")}
        absent = sorted(name for name in expected if not (folder / name).is_file())
        output = data_dir / f"{folder.name}.npz"
        if absent:
            report["datasets"][folder.name] = f"incomplete: missing {', '.join(absent)}"
        elif output.exists():
            report["datasets"][folder.name] = f"ready: {output}"
        else:
            subprocess.run([sys.executable, str(folder / "unpack.py"), str(output)], check=True)
            report["datasets"][folder.name] = f"ready: {output}"
    for manifest in sorted((staged / "checkpoints").glob(f"*/*{MANIFEST_SUFFIX}")):
        run, which = manifest.parent.name, manifest.name.removesuffix(MANIFEST_SUFFIX)
        absent = missing_parts(manifest)
        if absent:
            report["checkpoints"][f"{run}/{which}"] = f"incomplete: missing {', '.join(absent)}"
            continue
        target = campaign_runs / run / which
        join_parts(manifest, target)
        # Beside it, so that the campaign does not send back the checkpoint it was given.
        shutil.copyfile(manifest, target.with_name(manifest.name))
        report["checkpoints"][f"{run}/{which}"] = f"ready: {target}"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="split the datasets into carry folders that fit beside the working tree")
    p.add_argument(
        "--datasets", nargs="+", default=["cifar10"], help="shared dataset folders to send (default: cifar10)"
    )
    p.add_argument("--shared", type=Path, default=SHARED, help=f"where they are (default: {SHARED})")
    p.add_argument(
        "--checkpoints",
        type=Path,
        default=CHECKPOINTS,
        help="checkpoint parts to send back too (default: .data/checkpoints/<run>/*.partNN)",
    )
    sub.add_parser("check", help="check the part folders against the working tree as it is now")
    u = sub.add_parser("unpack", help="on the GPU machine: rebuild .data/<dataset>.npz and carried checkpoints")
    u.add_argument(
        "--runs", type=Path, default=CAMPAIGN_RUNS, help="where carried checkpoints go (the campaign's store)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            packages, absent = package_items()
            if absent:
                print(f"not installed here, not sent (the campaign skips what needs them): {', '.join(absent)}")
            result = plan(ROOT, args.shared, args.datasets, args.checkpoints, CARRY, packages=packages)
            print(f"working tree: {result.tree / MiB:.2f} MiB; room per part: {result.room / MiB:.2f} MiB")
            for number, size in enumerate(result.sizes(), 1):
                names = ", ".join(item.destination for item in result.parts[number - 1])
                print(f"  .data/carry/part-{number}: {size / MiB:.2f} MiB  ({names})")
            print(
                f"{len(result.parts)} device call(s), one per part, back to back; the last runs "
                "`python ops/gpu_window/stage_data.py unpack`"
            )
        elif args.command == "check":
            sizes = check(ROOT, CARRY)
            print(
                f"working tree {tree_bytes(ROOT) / MiB:.2f} MiB; parts "
                + ", ".join(f"{s / MiB:.2f}" for s in sizes)
                + f" MiB: each fits under {CARRY_LIMIT / MiB:.0f} MiB"
            )
        else:
            report = unpack(CARRY, STAGED, args.runs, ROOT / ".data")
            print(json.dumps(report, indent=1))
            if report["missing_parts"]:
                print(f"missing part(s) {report['missing_parts']}: carry them again, then unpack again")
                return 3
    except PlanError as error:
        print(f"stage_data: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
