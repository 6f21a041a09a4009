"""Where a number came from: the record that travels with every result.

A record names the parameters, the code version (git sha, with ``-dirty`` when the working
tree had uncommitted changes), the device, the library versions, the date and the wall time.
The book prints it beside every table, so a reader can tell a real run from a smoke test.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

# Files that decide what a run computes. Changes elsewhere (the book's prose, executed
# notebooks, stored run records, and the benchmarks' own results and pilot runs, which a
# background job may be writing) do not make a result "dirty".
CODE_PATHS = (
    "pagcore",
    "notebooks",
    "tools",
    "benchmarks",
    "pyproject.toml",
    "constraints.txt",
    ":(exclude)benchmarks/results",
    ":(exclude)benchmarks/pilot_runs",
)


def git_revision(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, ``<sha>-dirty`` if code differs from it, or ``"unknown"``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if status else sha


def running_revision() -> str:
    """The revision of the code this process runs: :func:`git_revision` when pagcore was imported.

    A long process (a whole results table, one run after another) keeps running the code it loaded,
    whatever is committed or edited meanwhile, so its records must not ask git again later."""
    return _RUNNING_REVISION


_RUNNING_REVISION = git_revision()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device | str | None = None) -> str:
    """A human-readable name of the hardware that ran the computation."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu: {cpu_name()} ({os.cpu_count()} logical cores, {threads} torch thread{'s' if threads != 1 else ''})"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def run_record(
    parameters: dict[str, Any],
    *,
    wall_seconds: float,
    started: str,
    device: torch.device | str | None = None,
    kind: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of one run.

    ``kind`` says what the numbers are: ``"real"`` for a run at the settings the book reports,
    ``"smoke"`` for a code test on tiny settings and ``"pilot"`` for a run that chooses a preset;
    neither of the last two is ever shown as a result.
    """
    record = {
        "kind": kind,
        "parameters": parameters,
        "git": running_revision(),
        "device": device_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": started,
        "finished": utc_now(),
        "wall_seconds": round(wall_seconds, 3),
    }
    if extra:
        record.update(extra)
    return record


def write_json_atomic(path: Path | str, payload: Any) -> None:
    """Write JSON so that a reader never sees a half-written file (write, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        json.dump(payload, tmp, indent=2, sort_keys=True, default=str)
        tmp.write("\n")
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
