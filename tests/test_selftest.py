"""``python -m pagcore selftest`` runs every code path on this machine's device and names the one that fails."""

import json
import subprocess
import sys

import pytest

from pagcore.orchestrate import selftest
from pagcore.orchestrate.selftest import Selftest, run_selftest


@pytest.mark.slow
def test_selftest_runs_every_path_on_cpu_with_synthetic_data(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pagcore", "selftest", "--device", "cpu", "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    paths = [p["path"] for p in report["paths"]]
    assert report["ok"] and all(p["ok"] for p in report["paths"])
    assert len(paths) == 14 and paths[-1].startswith("stl10")  # synthetic STL-10 included
    assert any("AutoAttack" in p for p in paths) and any(p.startswith("gradient strategy vmap") for p in paths)
    assert report["size"]["width"] == 4  # tiny off CUDA


def test_a_failing_path_stops_the_selftest_and_is_named(tmp_path, monkeypatch):
    def broken(self):
        raise ValueError("no gradient")

    monkeypatch.setattr(Selftest, "resumed", broken)
    calls = []
    real_paths = Selftest.paths

    def counted(self):
        paths = real_paths(self)
        return [(name, (lambda check=check, name=name: calls.append(name) or check())) for name, check in paths]

    # Only the paths up to the broken one run: stub the training paths so the test stays fast.
    monkeypatch.setattr(Selftest, "train", lambda self, *args, **kwargs: {"run": "stub"})
    monkeypatch.setattr(Selftest, "paths", counted)
    report = run_selftest(tmp_path / "work", selftest.synthetic_data(), "cpu")
    assert not report["ok"]
    assert report["failed"] == "a run stopped by its time budget resumes from its checkpoint"
    assert report["paths"][-1]["error"] == "ValueError: no gradient"
    assert calls[-1] == report["failed"] and "adversarial training ℓ∞ (RIGD teacher)" not in calls
