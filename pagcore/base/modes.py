"""Evaluating a model without disturbing it: eval mode in, the caller's mode out.

Attacks, accuracies and gradient probes all need batch-norm to use its running statistics
(and must not update them), so they run the model in eval mode. The caller may be in the
middle of training, so the previous mode of every submodule is put back afterwards, also
when the evaluation raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode for the ``with`` block; restore each submodule's mode after."""
    # Submodule by submodule: a model may have been left with mixed modes on purpose
    # (e.g. frozen batch-norm layers inside a training model).
    saved = [(module, module.training) for model in models for module in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training
