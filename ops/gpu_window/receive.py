"""Merge what a GPU-window call brought back into this checkout.

    python ops/gpu_window/receive.py FILES_AT     # the folder the device tool put the call's files in

Runs go into runs/, the CUDA benchmark into benchmarks/results/, the report into
.data/campaign-reports/, checkpoint parts into .data/checkpoints/<run>/ (out of git), each
checkpoint joined once all its parts are here (:func:`ops.gpu_window.campaign.unpack_results`).
It lists the CPU-scale runs whose final weights git ignores and no ``weights.json`` names yet: commit
them once and archive them (``python -m pagcore weights archive``), or they stay on this disk only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ops.gpu_window.campaign import unpack_results  # noqa: E402 (after the path set-up above)
from pagcore.store.weights import unarchived  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    merged = unpack_results(Path(sys.argv[1]), ROOT)
    merged["weights_to_commit_and_archive"] = unarchived(ROOT / "runs")
    print(json.dumps(merged, indent=1))
