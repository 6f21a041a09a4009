"""Move run-store results between machines as one file (checkpoints excluded).

    python tools/pack_runs.py pack $OUT/runs.tar.gz [RUN ...]   # on the GPU machine
    python tools/pack_runs.py unpack runs.tar.gz                # here: merge into runs/
    python tools/pack_runs.py campaign FILES_AT                 # here: what `python -m pagcore.campaign` returned

The device tool returns at most 8 files, two folders deep; a run directory alone has more,
so the records, metrics, history and artifacts of all runs travel in one archive. The
campaign's output (pagcore/campaign.py) is merged by ``campaign``: runs into runs/, the CUDA
benchmark into benchmarks/results/, the report into .data/campaign-reports/, checkpoint parts
into .data/checkpoints/<run>/ (out of git), each checkpoint joined once all its parts are here.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"


def keep(path: Path) -> bool:
    return not path.name.startswith("checkpoint-") and not path.name.endswith(".tmp")


def pack(archive: Path, names: list[str]) -> None:
    runs = [RUNS / n for n in names] if names else sorted(p for p in RUNS.iterdir() if (p / "params.json").exists())
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for run in runs:
            for file in sorted(run.rglob("*")):
                if file.is_file() and keep(file):
                    tar.add(file, arcname=str(file.relative_to(RUNS)))
    print(f"packed {len(runs)} run(s) into {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")


def unpack(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        for m in members:
            target = (RUNS / m.name).resolve()
            if RUNS.resolve() not in target.parents:
                raise ValueError(f"refusing to write outside runs/: {m.name}")
        tar.extractall(RUNS, members=members, filter="data")
    print(f"unpacked {len(members)} file(s) into {RUNS}")


if __name__ == "__main__":
    command, archive, *names = sys.argv[1:]
    if command == "campaign":
        sys.path.insert(0, str(ROOT))
        from pagcore.campaign import unpack_results

        print(json.dumps(unpack_results(Path(archive), ROOT), indent=1))
    else:
        pack(Path(archive), names) if command == "pack" else unpack(Path(archive))
