"""Robust input-gradient distillation, RIGD (Section 4.1): g(x, y_t) = grad_x f*(x)_{y_t}.

The targets are the input-gradients of an adversarially trained teacher f* (trained by
:func:`pagcore.train.trainer.train` with ``objective="adversarial"``). Because such a teacher is
robust, distilling its gradients may also distil its robustness, so the paper treats RIGD
as an empirical upper bound rather than as evidence for its question.

Two ways to supply the targets, with the same interface as :mod:`pagcore.paper.targets`:

* :class:`PrecomputedGradients`, the paper's way (Appendix C.2): the C gradients of every
  training image are computed once, before training, normalised to unit length (Eq. 2 only
  sees directions) and kept as float16. CIFAR-10 needs 50,000 x 10 x 3,072 values, 3.1 GB,
  on the training device. Augmentation then acts on the stored gradient, ``T(g)``.
* :class:`TeacherOnTheFly` evaluates the teacher on the augmented batch at every step: no
  memory, but one teacher forward pass and k backward passes per step, every epoch.

Precomputing costs one such pass over the training set in all; on the fly costs one per
epoch. ``benchmarks/pag_step.py`` measures the per-step difference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pagcore.base.modes import eval_mode
from pagcore.base.progress import progress_bar
from pagcore.data import as_float
from pagcore.paper.objective import GradientKind, class_input_gradients
from pagcore.paper.targets import TargetSource


def unit_vectors(g: Tensor) -> Tensor:
    """Each (sample, class) gradient scaled to unit L2 norm (zero stays zero)."""
    norms = torch.linalg.vector_norm(g.flatten(2), dim=2).view(*g.shape[:2], *([1] * (g.dim() - 2)))
    return g / norms.clamp_min(1e-12)


def teacher_gradients(teacher: nn.Module, x: Tensor, classes: Tensor, gradient: GradientKind = "logit") -> Tensor:
    """The teacher's input-gradients for ``classes`` at ``x`` (eval mode, no graph kept)."""
    with eval_mode(teacher), torch.enable_grad():
        _, grads = class_input_gradients(teacher, x, classes, gradient, strategy="vmap", create_graph=False)
    return grads.detach()


class PrecomputedGradients(TargetSource):
    """Targets looked up from a ``(N, C, *sample_shape)`` float16 table of unit gradients: RIGD's
    teacher gradients, or score-based ones (``name``)."""

    def __init__(self, table: Tensor, name: str = "rigd"):
        self.table, self.name = table, name

    @classmethod
    def from_teacher(
        cls,
        teacher: nn.Module,
        train_images: Tensor,
        num_classes: int,
        *,
        gradient: GradientKind = "logit",
        batch_size: int = 250,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> PrecomputedGradients:
        device = torch.device(device)
        table = torch.empty(
            (len(train_images), num_classes, *train_images.shape[1:]), dtype=torch.float16, device=device
        )
        all_classes = torch.arange(num_classes, device=device)
        starts = range(0, len(train_images), batch_size)
        for start in progress_bar(starts, enabled=progress, desc="RIGD targets", unit="batch"):
            x = as_float(train_images[start : start + batch_size].to(device))
            classes = all_classes.expand(len(x), num_classes)
            table[start : start + len(x)] = unit_vectors(teacher_gradients(teacher, x, classes, gradient)).half()
        return cls(table)

    def target_gradients(self, x, index, classes, transform=None):
        g = self.table[index.unsqueeze(1), classes].to(x.dtype)
        return transform(g) if transform is not None else g


class TeacherOnTheFly(TargetSource):
    """RIGD targets computed by the teacher on each (augmented) batch."""

    name = "rigd"

    def __init__(self, teacher: nn.Module, gradient: GradientKind = "logit"):
        self.teacher = teacher
        self.gradient = gradient

    def target_gradients(self, x, index, classes, transform=None):
        # The batch is already augmented: the teacher sees exactly what the student sees.
        return teacher_gradients(self.teacher, x, classes, self.gradient)

    def to(self, device):
        self.teacher.to(device)
        return self
