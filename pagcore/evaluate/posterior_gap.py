"""How far a source's targets are from being the log-posterior gradients of any classifier.

The input-gradients of a classifier's log-posteriors obey one linear constraint at every x:

    Σ_c p(c | x) ∇ log p(c | x) = ∇ Σ_c p(c | x) = 0,

so the origin lies in the convex hull of the C gradient directions. Logit gradients obey nothing
of the kind. Score-based targets are log-posterior gradients of the denoiser's implicit classifier
and so obey it (as far as the trained network's conditional and unconditional scores agree), while
a representative's direction r_c - x for every class need not: the origin is in the hull of those
directions only when x lies in the hull of the representatives.

The *posterior gap* of a target family {t_c} at x is the distance from the origin to the convex
hull of the unit directions t_c / |t_c|. It is zero for any log-posterior gradient family, and it
bounds how well such a family can align with the targets. Write u_c for the unit log-posterior
gradients and w_c ∝ p(c | x) |∇ log p(c | x)| for weights that sum to one, so that Σ w_c u_c = 0,
and m = Σ w_c t̂_c, a point of the hull, so |m| ≥ gap. Then

    Σ w_c cos(u_c, t̂_c) = Σ w_c <u_c, t̂_c - m> ≤ (Σ w_c |t̂_c - m|²)^½ = (1 - |m|²)^½ ≤ (1 - gap²)^½:

a weighted mean of the classes' cosines, and so the worst class's, is capped. Logit gradients obey
no constraint and no cap.

``python -m pagcore posterior-gap`` (:mod:`pagcore.orchestrate.measurements`) measures the gap of
every source's targets and records it under runs/measurements/, where :func:`load_posterior_gap`
reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor

from pagcore.data import SPECS
from pagcore.evaluate.ceiling import MEASUREMENTS
from pagcore.paper.rigd import unit_vectors

SIMPLEX_WEIGHT = 1e4
"""How strongly the weights are held to sum to one in the least-squares problem (relative to
targets of unit length): the sum is off by about gap² / SIMPLEX_WEIGHT², far below what is reported."""

QUANTILES = (0.1, 0.5, 0.9)


def hull_distance(directions: Tensor) -> float:
    """The distance from the origin to the convex hull of the rows of ``directions`` ``(C, D)``.

    min over weights w ≥ 0 with Σ w = 1 of |Σ w_c d_c|, solved exactly (non-negative least squares
    on the C x C Gram matrix, with the sum held to one by a heavily weighted extra row)."""
    rows = directions.flatten(1).double()
    gram = (rows @ rows.T).cpu().numpy()
    values, vectors = np.linalg.eigh(gram)
    factor = np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T  # factor.T @ factor == gram
    count = len(gram)
    system = np.vstack([factor, SIMPLEX_WEIGHT * np.ones((1, count))])
    goal = np.concatenate([np.zeros(count), [SIMPLEX_WEIGHT]])
    weights, _ = nnls(system, goal)
    weights /= weights.sum()
    return float(np.sqrt(max(weights @ gram @ weights, 0.0)))


def posterior_gaps(targets: Tensor) -> Tensor:
    """The posterior gap of each image's targets ``(B, C, *image)``: shape ``(B,)``."""
    return torch.tensor([hull_distance(t) for t in unit_vectors(targets)])


def cosine_cap(gap: float) -> float:
    """The largest weighted mean cosine (and so worst-class cosine) that a log-posterior gradient
    family can reach with targets of posterior gap ``gap`` (see the module docstring)."""
    return (1.0 - min(gap, 1.0) ** 2) ** 0.5


def summary(gaps: Tensor) -> dict[str, Any]:
    """The gaps' mean and quantiles, and the cosine cap at the median."""
    values = gaps.double()
    quantiles = {f"q{round(100 * q)}": float(values.quantile(q)) for q in QUANTILES}
    return {"mean": float(values.mean()), **quantiles, "median_cosine_cap": cosine_cap(quantiles["q50"])}


def gap_path(dataset: str, root: Path | None = None) -> Path:
    return (root or MEASUREMENTS) / f"posterior_gap-{dataset}.json"


def load_posterior_gap(dataset: str, root: Path | None = None) -> dict[str, Any] | None:
    """The recorded posterior gaps of ``dataset`` (None if not measured)."""
    path = gap_path(dataset, root)
    if dataset not in SPECS or not path.exists():
        return None
    return json.loads(path.read_text())
