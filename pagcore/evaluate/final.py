"""Evaluation on real data (Section 5.2): clean accuracy, PGD-20 accuracy, PAG pictures.

* :func:`evaluate` runs over the whole test set in batches, with a progress bar, and returns
  accuracies as fractions: ``{"clean": ..., "linf": ..., "l2": ...}``. It always runs in
  float32, as the paper's evaluation did: an autocast region around the call is switched off.
* Two sets of radii, each used for what it is: :data:`PAPER_PGD_EPS` is the paper's PGD-20
  evaluation (L-inf 0.031, Section 5.2), for the columns compared with its tables;
  :data:`STANDARD_EPS` (L-inf 8/255 = 0.0314) is the RobustBench/AutoAttack convention and
  the radius of the paper's adversarially trained teachers (Appendix C.2).
* :func:`pag_pictures` is the qualitative test of Figs. 1 and 4: a large-epsilon targeted
  PGD from a few test images towards every class. A model with perceptually aligned
  gradients turns the image into something that looks like the target class.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.progress import progress_bar
from pagcore.base.validation import check_positive, check_positive_int
from pagcore.config import knob
from pagcore.data import as_float
from pagcore.paper import reported
from pagcore.paper.attacks import PGD

if TYPE_CHECKING:
    from pagcore.data import ImageDataset
    from pagcore.store.runs import Run

# The two sets of radii are the paper's facts and live in pagcore.paper.reported; here they get the names
# of what they are used for.
PAPER_PGD_EPS = reported.PGD_EVAL_EPS
STANDARD_EPS = reported.EPS


# Large-eps L2 radius of the PAG pictures (ours; the paper does not give one). STL-10 images
# have 9x the pixels of CIFAR-10's, hence 3x the radius.
PICTURE_EPS: dict[str, float] = {"cifar10": 10.0, "stl10": 30.0}
# The norm and number of steps of the PAG pictures' targeted PGD (ours too).
PICTURE_NORM = "l2"
PICTURE_STEPS = 60


@dataclass(frozen=True)
class EvaluationConfig:
    """The final evaluation of a trained run: the paper's PGD and the PAG pictures.

    Not part of a run's identity: they are stored with the numbers they produced, in the run's
    ``metrics.json``, and evaluating again with other settings never means retraining.
    """

    pgd_steps: int = knob(20, "PGD steps of the final evaluation (the paper's 20)")
    picture_images: int = knob(4, "test images in the PAG picture grid")
    picture_eps: float | None = knob(None, "L2 radius of the PAG pictures (default: 10 on CIFAR-10, 30 on STL-10)")
    eval_seed: int = knob(0, "seed of the attacks' random starts")

    def validate(self) -> EvaluationConfig:
        check_positive_int("pgd_steps", self.pgd_steps)
        check_positive_int("picture_images", self.picture_images)
        if self.picture_eps is not None:
            check_positive("picture_eps", self.picture_eps)
        return self


def paper_attacks(dataset: str, steps: int = 20) -> dict[str, PGD]:
    """The paper's PGD-``steps`` (random start, step 2*eps/steps, last iterate) at its radii."""
    return {norm: PGD.paper_real_data(norm, eps, steps) for norm, eps in PAPER_PGD_EPS[dataset].items()}


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Mapping[str, PGD],
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Clean accuracy and the accuracy under each attack, over all of ``images``.

    ``images`` may be uint8 (converted per batch) and live on any device; batches are moved
    to ``device``. Random starts are drawn from a generator seeded with ``seed``, so the
    numbers are reproducible. Everything runs in float32: reduced precision changes attack
    gradients and the paper evaluated in full precision.
    """
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = {name: torch.zeros((), dtype=torch.int64, device=device) for name in ("clean", *attacks)}
    starts = range(0, len(images), batch_size)
    with eval_mode(model), torch.autocast(device.type, enabled=False):
        for start in progress_bar(starts, enabled=progress, desc="evaluate", unit="batch"):
            x = as_float(images[start : start + batch_size].to(device)).float()
            y = labels[start : start + batch_size].to(device)
            with torch.no_grad():
                correct["clean"] += (model(x).argmax(1) == y).sum()
            for name, attack in attacks.items():
                x_adv = attack(model, x, y, generator=generator)
                with torch.no_grad():
                    correct[name] += (model(x_adv).argmax(1) == y).sum()
    return {name: count.item() / len(images) for name, count in correct.items()}


def pag_pictures(
    model: nn.Module,
    images: Tensor,
    num_classes: int,
    *,
    norm: str = PICTURE_NORM,
    eps: float = 10.0,
    steps: int = PICTURE_STEPS,
    step_size: float | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Targeted large-eps PGD from each image towards every class.

    Returns ``(n, 1 + C, 3, H, W)`` in [0, 1]: column 0 is the original image, column 1 + c
    the image pushed towards class c. ``step_size`` defaults to 2.5 * eps / steps.
    """
    device = torch.device(device)
    x = as_float(images.to(device))
    n = len(x)
    attack = PGD(norm, eps, step_size=step_size or 2.5 * eps / steps, steps=steps, bounds=(0.0, 1.0))
    repeated = x.repeat_interleave(num_classes, dim=0)
    targets = torch.arange(num_classes, device=device).repeat(n)
    moved = attack(model, repeated, targets, target=targets)
    grid = torch.cat([x.unsqueeze(1), moved.view(n, num_classes, *x.shape[1:])], dim=1)
    return grid.cpu()


def clean_accuracy(model: nn.Module, images: Tensor, labels: Tensor, *, device: torch.device | str = "cpu") -> float:
    return evaluate(model, images, labels, {}, device=device, progress=False)["clean"]


def first_of_each_class(labels: Tensor, count: int) -> Tensor:
    """Indices of the first test image of classes 0, 1, ..., count-1 (a fixed, varied choice)."""
    labels = labels.cpu()
    chosen = []
    for c in range(int(labels.max()) + 1):
        hits = torch.nonzero(labels == c).flatten()
        if len(hits):
            chosen.append(int(hits[0]))
        if len(chosen) == count:
            break
    return torch.tensor(chosen, dtype=torch.int64)


def evaluate_run(
    run: Run,
    model: nn.Module,
    data: ImageDataset,
    settings: EvaluationConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """The final evaluation of ``run``: clean and PGD accuracy on the whole test set (float32),
    written with its settings to ``metrics.json``, and the PAG pictures to ``artifacts/``."""
    settings.validate()
    start = time.perf_counter()
    attacks = paper_attacks(data.name, settings.pgd_steps)
    metrics = evaluate(
        model, data.x_test, data.y_test, attacks, device=device, seed=settings.eval_seed, progress=progress
    )
    metrics["test_images"] = len(data.x_test)
    metrics["test_set"] = data.test_set
    metrics["pgd_steps"] = settings.pgd_steps
    metrics["attacks"] = {name: attack.settings() for name, attack in attacks.items()}
    metrics["settings"] = asdict(settings)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 3)
    run.write_json("metrics.json", metrics)

    chosen = first_of_each_class(data.y_test, settings.picture_images)
    grid = pag_pictures(
        model, data.x_test[chosen], data.num_classes, **picture_attack(data.name, settings), device=device
    )
    save_pag_grid(run.artifacts, grid, chosen)
    return metrics


def picture_attack(dataset: str, settings: EvaluationConfig | Mapping | None = None) -> dict:
    """The targeted PGD of the PAG pictures made with ``settings`` (or, as stored in a run's
    ``metrics.json``, their dict): ``{"norm": ..., "eps": ..., "steps": ...}``."""
    if isinstance(settings, EvaluationConfig):
        settings = asdict(settings)
    chosen = (settings or {}).get("picture_eps")
    return {
        "norm": PICTURE_NORM,
        "eps": PICTURE_EPS[dataset] if chosen is None else chosen,
        "steps": PICTURE_STEPS,
    }


PAG_GRID = "pag_grid.png"
"""A stored PAG picture grid: its 8-bit pixels as one lossless PNG mosaic, one row per test image."""
PAG_GRID_LAYOUT = "pag_grid.json"
"""Beside it: the mosaic's rows and columns and the test-set index of each row."""


def save_pag_grid(folder: Path, grid: Tensor, test_index: Tensor | None) -> None:
    """Store a PAG picture grid (:func:`pag_pictures`, rows × columns × channels × height × width in
    [0, 1]) as 8-bit pixels in a PNG mosaic, the input first in each row.

    The pixels are what any display of the images shows. The grids travel with the repository, and a
    PNG keeps them exactly at about three quarters of the raw bytes; the mosaic is also what someone
    browsing a run folder wants to look at."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = grid.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    rows, columns, channels, height, width = pixels.shape
    mosaic = pixels.permute(0, 3, 1, 4, 2).reshape(rows * height, columns * width, channels)
    Image.fromarray(mosaic.numpy().squeeze(-1) if channels == 1 else mosaic.numpy()).save(folder / PAG_GRID)
    layout = {"rows": rows, "columns": columns, "test_index": None if test_index is None else test_index.tolist()}
    (folder / PAG_GRID_LAYOUT).write_text(json.dumps(layout) + "\n")


def _pag_grid_layout(folder: Path) -> dict | None:
    path = folder / PAG_GRID_LAYOUT
    return json.loads(path.read_text()) if path.exists() and (folder / PAG_GRID).exists() else None


def load_pag_grid(folder: Path) -> Tensor | None:
    """The stored grid of :func:`save_pag_grid` as float images in [0, 1]; None if there is none."""
    layout = _pag_grid_layout(folder)
    if layout is None:
        return None
    with Image.open(folder / PAG_GRID) as image:
        mosaic = torch.from_numpy(np.array(image))
    if mosaic.dim() == 2:
        mosaic = mosaic.unsqueeze(-1)
    rows, columns = layout["rows"], layout["columns"]
    height, width, channels = mosaic.shape[0] // rows, mosaic.shape[1] // columns, mosaic.shape[2]
    pixels = mosaic.reshape(rows, height, columns, width, channels).permute(0, 2, 4, 1, 3)
    return as_float(pixels.contiguous())


def load_pag_grid_index(folder: Path) -> list[int] | None:
    """The test-set indices of the images in the stored grid, row by row; None if not stored."""
    layout = _pag_grid_layout(folder)
    return None if layout is None else layout["test_index"]
