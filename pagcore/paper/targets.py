"""Where the "ground-truth" gradients g(x, y_t) come from (Section 4 of the paper).

The model-free sources of Section 4.2 all set ``g(x, y_t) = r - x``, pointing from the input
towards a representative r of the target class:

* ``one_image``: r is one fixed training sample of class y_t, drawn once with a seed;
* ``class_mean``: r is the mean of the class's training samples, optionally stretched so
  that its distance from the centre of the data range equals the class's average one;
* ``nearest_neighbor``: r depends on x, it is x's nearest neighbour (L2) in a random pool of
  n training samples of class y_t, never x itself (Eq. 3).

Section 4.1's robust input-gradient distillation lives in :mod:`pagcore.paper.rigd`.

The code is written for any tensor data: a sample is a tensor of any shape (a 2-D point, a
CHW image). Images may be stored as uint8; they are compared and subtracted as floats in
[0, 1], the same space in which the model and the attacks see them.

Every source answers one question per training batch, :meth:`TargetSource.target_gradients`:
given the batch's (possibly augmented) inputs, their indices into the training set and the
chosen target classes, return the g(x, y_t). Augmentation is linear (crops with zero padding,
flips), so the target of an augmented image is the augmented target, ``T(r) - T(x)``; the
``transform`` argument applies the batch's transform to the representatives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pagcore.base.validation import ConfigError, check_choice, check_positive_int
from pagcore.data import as_float

MODEL_FREE_SOURCES: tuple[str, ...] = ("one_image", "class_mean", "nearest_neighbor")

BatchTransform = Callable[[Tensor], Tensor]
"""Applies one batch's augmentation to a tensor of shape (B, k, *sample_shape)."""


def class_indices(labels: Tensor, num_classes: int) -> list[Tensor]:
    """Training-set indices of every class; fails clearly if a class has no sample."""
    groups = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    empty = [c for c, g in enumerate(groups) if g.numel() == 0]
    if empty:
        raise ConfigError(f"the training labels have no sample of class(es) {empty}; every class needs one")
    return groups


class TargetSource(ABC):
    """A realisation of the ground-truth gradients g(x, y_t) of Eq. (1)."""

    name: str

    @abstractmethod
    def target_gradients(
        self, x: Tensor, index: Tensor, classes: Tensor, transform: BatchTransform | None = None
    ) -> Tensor:
        """g(x_i, classes[i, j]) for a batch: shape ``(B, k, *x.shape[1:])``.

        ``x`` holds the batch as the model sees it (floats, after augmentation), ``index`` the
        rows of the training set the batch came from, ``classes`` the ``(B, k)`` target classes.
        """

    def to(self, device: torch.device | str) -> TargetSource:
        for attribute, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, attribute, value.to(device))
        return self


class RepresentativeSource(TargetSource):
    """``g(x, y_t) = r[y_t] - x`` for one fixed representative per class (one image, class mean)."""

    def __init__(self, name: str, representatives: Tensor):
        self.name = name
        self.representatives = representatives

    def target_gradients(self, x, index, classes, transform=None):
        reps = self.representatives[classes].to(x.dtype)  # (B, k, *sample_shape)
        if transform is not None:
            reps = transform(reps)
        return reps - x.unsqueeze(1)


class NearestNeighborSource(TargetSource):
    """``g(x, y_t) = x_train[neighbor[i, y_t]] - x`` with the neighbours of Eq. (3) precomputed.

    Storing one index per (sample, class) pair instead of the gradients themselves keeps the
    table tiny (CIFAR-10: 50,000 x 10 int64, 4 MB) and lets augmentation act on the neighbour
    image exactly as it acts on the sample.
    """

    name = "nearest_neighbor"

    def __init__(self, train_samples: Tensor, neighbor_index: Tensor):
        self.train_samples = train_samples
        self.neighbor_index = neighbor_index

    def target_gradients(self, x, index, classes, transform=None):
        rows = self.neighbor_index[index.unsqueeze(1), classes]  # (B, k)
        reps = as_float(self.train_samples[rows]).to(x.dtype)
        if transform is not None:
            reps = transform(reps)
        return reps - x.unsqueeze(1)


def one_image_representatives(samples: Tensor, labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """One training sample per class, drawn uniformly with ``seed``: shape ``(C, *sample_shape)``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for members in class_indices(labels.cpu(), num_classes):
        pick = torch.randint(len(members), (1,), generator=generator).item()
        chosen.append(int(members[pick]))
    return as_float(samples[torch.tensor(chosen, device=samples.device)])


def class_mean_representatives(
    samples: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    rescale: bool = True,
    center: float = 0.0,
    chunk_size: int = 4096,
) -> Tensor:
    """Per-class means, shape ``(C, *sample_shape)``.

    The mean of a class is blurrier and closer to the centre of the data than any of its
    samples. With ``rescale`` each mean is stretched away from ``center`` until its distance
    from it equals the class's average sample distance, the "image-like norm" the paper
    mentions. ``center`` is where the norm is measured from: 0 for the toy data and 0.5 for
    [0, 1] images, which is the origin of the [-1, 1] space the authors' code trains in.
    """
    class_indices(labels.cpu(), num_classes)  # fails early on an empty class
    labels = labels.to(samples.device)
    flat_shape = samples[0].numel()
    sums = torch.zeros(num_classes, flat_shape, dtype=torch.float64, device=samples.device)
    norm_sums = torch.zeros(num_classes, dtype=torch.float64, device=samples.device)
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    for start in range(0, len(samples), chunk_size):
        chunk = as_float(samples[start : start + chunk_size]).flatten(1).double()
        chunk_labels = labels[start : start + chunk_size]
        sums.index_add_(0, chunk_labels, chunk)
        norm_sums.index_add_(0, chunk_labels, torch.linalg.vector_norm(chunk - center, dim=1))
    means = sums / counts.unsqueeze(1)
    if rescale:
        offsets = means - center
        scale = (norm_sums / counts) / torch.linalg.vector_norm(offsets, dim=1).clamp_min(1e-12)
        means = center + offsets * scale.unsqueeze(1)
    return means.float().view(num_classes, *samples.shape[1:])


def nearest_neighbor_index(
    samples: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    pool_size: int,
    seed: int,
    chunk_size: int = 1024,
) -> Tensor:
    """Eq. (3): for every training sample and every class, the index of its nearest neighbour.

    The candidates of class c are a pool of ``pool_size`` samples of c drawn without
    replacement with ``seed`` (all of c if it has fewer). Distances are pixel L2, computed in
    chunks as matrix products on the samples' device. A sample is never its own neighbour:
    when it sits in its own class's pool, that entry is masked out by index. Returns an int64
    tensor of shape ``(N, C)`` on the samples' device.

    The expansion |q - p|^2 = |q|^2 - 2 q.p + |p|^2 cancels catastrophically when the points
    sit far from the origin compared with their spacing (the toy's modes are 50 units out and
    their neighbours a few hundredths apart): in float32 it picks a wrong neighbour for about
    half the toy's points. So the products are taken in float64, about the pool's centre.
    """
    check_positive_int("pool_size", pool_size)
    if pool_size < 2:
        raise ConfigError(
            f"pool_size must be >= 2 so that a sample always has a neighbour other than itself; got {pool_size}"
        )
    device = samples.device
    generator = torch.Generator().manual_seed(seed)
    pools = []
    for members in class_indices(labels.cpu(), num_classes):
        order = torch.randperm(len(members), generator=generator)[:pool_size]
        pools.append(members[order].to(device))

    n = len(samples)
    result = torch.empty(n, num_classes, dtype=torch.int64, device=device)
    for c, pool in enumerate(pools):
        candidates = as_float(samples[pool]).flatten(1).double()
        center = candidates.mean(dim=0)
        candidates -= center
        candidate_sq = candidates.square().sum(dim=1)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            queries = as_float(samples[start:stop]).flatten(1).double() - center
            # |q - p|^2 without |q|^2, which is the same for every candidate of a query.
            dist = candidate_sq.unsqueeze(0) - 2.0 * queries @ candidates.t()
            own = pool.unsqueeze(0) == torch.arange(start, stop, device=device).unsqueeze(1)
            dist.masked_fill_(own, float("inf"))
            result[start:stop, c] = pool[dist.argmin(dim=1)]
    return result


@dataclass(frozen=True)
class SourceConfig:
    """What building a model-free source may need (each source reads only its own fields)."""

    seed: int = 0
    pool_size: int = 1000
    rescale_class_mean: bool = True
    center: float = 0.0


def _one_image(samples: Tensor, labels: Tensor, num_classes: int, settings: SourceConfig) -> TargetSource:
    return RepresentativeSource("one_image", one_image_representatives(samples, labels, num_classes, settings.seed))


def _class_mean(samples: Tensor, labels: Tensor, num_classes: int, settings: SourceConfig) -> TargetSource:
    reps = class_mean_representatives(
        samples, labels, num_classes, rescale=settings.rescale_class_mean, center=settings.center
    )
    return RepresentativeSource("class_mean", reps)


def _nearest_neighbor(samples: Tensor, labels: Tensor, num_classes: int, settings: SourceConfig) -> TargetSource:
    index = nearest_neighbor_index(samples, labels, num_classes, pool_size=settings.pool_size, seed=settings.seed)
    return NearestNeighborSource(samples, index)


# The registry of model-free sources (Section 4.2): a new source is one builder and one entry here.
# RIGD (Section 4.1) needs a trained teacher and is built by pagcore.train.trainer from the run store.
SOURCE_BUILDERS: dict[str, Callable[[Tensor, Tensor, int, SourceConfig], TargetSource]] = {
    "one_image": _one_image,
    "class_mean": _class_mean,
    "nearest_neighbor": _nearest_neighbor,
}
assert tuple(SOURCE_BUILDERS) == MODEL_FREE_SOURCES


def build_target_source(
    name: str,
    samples: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    pool_size: int = 1000,
    rescale_class_mean: bool = True,
    center: float = 0.0,
) -> TargetSource:
    """Construct one of the model-free sources by its API name (see ``SOURCE_BUILDERS``)."""
    check_choice("source", name, MODEL_FREE_SOURCES)
    settings = SourceConfig(seed=seed, pool_size=pool_size, rescale_class_mean=rescale_class_mean, center=center)
    return SOURCE_BUILDERS[name](samples, labels, num_classes, settings)
