"""Score-based target gradients for a whole training set, computed once and kept on disk.

The target of training image x_i and class c is the denoiser's log-posterior gradient
∇ log p_σ(c | x_i + σ ε_i) (:func:`pagcore.paper.denoiser.log_posterior_gradients`), at the
noise level σ of the run, for one noise draw ε_i per image seeded by the image's index (or the
unit-normalised mean over ``draws`` of them). The cosine loss ignores the targets' length, so
each is stored as a unit vector, in float16: a table of shape (N, C, *image), 3 GB for CIFAR-10.

The targets are those of the image as stored; a training step applies its augmentation (crops
with zero padding, flips: linear maps) to image and targets alike, as it does to the
representatives of the model-free sources. A denoiser forward costs tens of times a small
classifier's, so computing the targets of every augmented batch again would cost more than the
training itself.

Computing the table takes a while on a CPU, so it is written in chunks of images to a ``.npy``
file beside the data, with a second file marking the chunks done: a stopped computation goes on
where it was (a process stopped in the middle of it loses at most one chunk), and every later
run with the same denoiser, σ and draws reads the finished table. The table is computed in full
before training starts, which a run's time budget does not interrupt.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pagcore.base.modes import eval_mode
from pagcore.base.progress import progress_bar
from pagcore.data import as_float
from pagcore.paper.denoiser import Denoiser, log_posterior_gradients, seeded_noise
from pagcore.paper.rigd import unit_vectors

SCORE_TARGETS_DIR = Path(__file__).resolve().parents[2] / ".data" / "score_targets"
"""Where the tables are kept: the repository's data folder, which git ignores."""

CHUNK_IMAGES = 500
"""Images per chunk of the table: the work a stopped computation may lose."""


def score_targets(
    denoiser: Denoiser,
    images: Tensor,
    rows: range,
    sigma: float,
    *,
    draws: int = 1,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Unit score-based targets of training images ``rows`` for every class: ``(len(rows), C, *image)``,
    ``batch_size`` images (times C + 1 denoiser passes) at a time."""
    parts = []
    with eval_mode(denoiser), torch.no_grad():
        for start in range(rows.start, rows.stop, batch_size):
            batch = range(start, min(start + batch_size, rows.stop))
            x = as_float(images[batch.start : batch.stop]).to(device)
            classes = torch.arange(denoiser.num_classes, device=device).expand(len(x), -1)
            total = torch.zeros(len(x), denoiser.num_classes, *x.shape[1:], device=device)
            for draw in range(draws):
                noisy = x + sigma * seeded_noise(batch, tuple(x.shape[1:]), draw).to(device)
                total += unit_vectors(log_posterior_gradients(denoiser, noisy, sigma, classes))
            parts.append(unit_vectors(total).cpu())
    return torch.cat(parts)


def score_table(
    denoiser: Denoiser,
    images: Tensor,
    sigma: float,
    *,
    draws: int = 1,
    cache: Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Tensor:
    """The float16 table of score-based targets of every image of ``images``.

    With ``cache`` (a ``.npy`` path) the table is read from there, completed there first if it is
    not finished; without it, computed in memory."""
    shape = (len(images), denoiser.num_classes, *images.shape[1:])
    if cache is None:
        table = np.empty(shape, dtype=np.float16)
        _fill(
            table,
            np.zeros(-(-len(images) // CHUNK_IMAGES), dtype=bool),
            None,
            denoiser,
            images,
            sigma,
            draws,
            device,
            progress,
        )
        return torch.from_numpy(table)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # One process at a time per table (runs side by side may share one): a second waits, then reads.
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marks = cache.with_suffix(".done.npy")
        fresh = not (cache.exists() and marks.exists())
        table = np.lib.format.open_memmap(cache, mode="w+" if fresh else "r+", dtype=np.float16, shape=shape)
        done = np.zeros(-(-len(images) // CHUNK_IMAGES), dtype=bool) if fresh else np.load(marks)
        _fill(table, done, marks, denoiser, images, sigma, draws, device, progress)
        return torch.from_numpy(np.array(table))


def _fill(table, done, marks: Path | None, denoiser, images, sigma, draws, device, progress) -> None:
    """The chunks of ``table`` not ``done`` yet, each marked in ``marks`` (if any) once on disk."""
    todo = [i for i in range(len(done)) if not done[i]]
    for chunk in progress_bar(todo, enabled=progress, desc="score-based targets", unit="chunk"):
        rows = range(chunk * CHUNK_IMAGES, min((chunk + 1) * CHUNK_IMAGES, len(images)))
        table[rows.start : rows.stop] = score_targets(denoiser, images, rows, sigma, draws=draws, device=device).half()
        done[chunk] = True
        if marks is not None:
            table.flush()
            _save_atomic(marks, done)  # after the chunk's targets are on disk: a marked chunk is complete


def _save_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        np.save(file, array)
    os.replace(temporary, path)
